"""Network changes written on a command line, ``FIELD=VALUE``, shared by the benchmark scripts.

    python benchmarks/stopping.py ... --network channels_up=16:48:48:48:48 --network kernel_up=1
    python benchmarks/step_levers.py --levers "base,channels_up=16:48:48:48:48,kernel_up=1"
"""

from __future__ import annotations

from dataclasses import fields, replace


def network_overrides(net, settings: list[str]):
    """``net`` (a :class:`~napari_dip.engine.networks.SkipNetConfig`) with ``FIELD=VALUE``
    changes: numbers joined by ``:`` for a per-scale field (``channels_up=16:48:48:48:48``,
    the finest scale first), a whole number, ``true``/``false`` for a switch
    (``merge_norm=false``), or the value as written (``padding=zeros``).

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Net:
    ...     channels_up: tuple = (48, 48)
    ...     kernel_up: int = 3
    ...     padding: str = "reflect"
    ...     merge_norm: bool = True
    >>> network_overrides(Net(), ["channels_up=16:48", "kernel_up=1", "padding=zeros", "merge_norm=false"])
    Net(channels_up=(16, 48), kernel_up=1, padding='zeros', merge_norm=False)
    """
    known = {field.name for field in fields(net)}
    changes = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in known:
            raise SystemExit(f"a network change is FIELD=VALUE with FIELD one of {sorted(known)}, got {setting!r}")
        if ":" in value or name.startswith("channels_"):
            changes[name] = tuple(int(part) for part in value.split(":"))
        elif value.lower() in ("true", "false"):
            changes[name] = value.lower() == "true"
        elif value.lstrip("-").isdigit():
            changes[name] = int(value)
        else:
            changes[name] = value
    return replace(net, **changes)
