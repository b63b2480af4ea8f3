"""Milliseconds per iteration of whole engine fits (``Fitter.run``) of one task with network
changes, all in one process.

    python benchmarks/fit_step_cost.py --task inpaint --rounds 10 \
        --variants "cheap=padding=zeros+merge_norm=false+conv_bias=false,zeros=padding=zeros"

Each variant is ``NAME=FIELD=VALUE+FIELD=VALUE...`` (fields of
:class:`~napari_dip.engine.networks.SkipNetConfig`, written as ``stopping.py --network``
takes them) applied to the ``--preset``'s network for ``--task``; ``base`` is that network
unchanged. One fit per variant is built on the same random grey image (half its pixels
missing for inpainting, a quarter of the side for super-resolution) and their ``run``
generators are advanced in turn, ``--block`` iterations at a time, the order reversed every
round, so that a change in the machine's load hits every variant alike. Each iteration is
a whole one: jitter, step, running average, the stopping rule's bookkeeping (the task's
rule, kept from stopping). The table gives the median per variant and the ratio to
``base`` from the same rounds; ``--out`` also writes every block's time as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from network_fields import network_overrides  # noqa: E402 - after the path it is found on


def parse_variants(text: str) -> dict[str, list[str]]:
    """``"a=f=v+g=w,b=h=x"`` -> ``{"base": [], "a": ["f=v", "g=w"], "b": ["h=x"]}``.

    >>> parse_variants("cheap=padding=zeros+merge_norm=false")
    {'base': [], 'cheap': ['padding=zeros', 'merge_norm=false']}
    """
    variants: dict[str, list[str]] = {"base": []}
    for item in filter(None, text.split(",")):
        name, sep, fields = item.partition("=")
        if not sep or not fields:
            raise SystemExit(f"a variant is NAME=FIELD=VALUE[+FIELD=VALUE...], got {item!r}")
        variants[name] = fields.split("+")
    return variants


def fits(task: str, preset: str, size: int, variants: dict[str, list[str]], seed: int = 0) -> dict:
    """One ``Fitter.run`` generator per variant, on the same image, snapshotting every ``block``."""
    import numpy as np

    from napari_dip.arrays import prepare_image
    from napari_dip.engine.fit import Fitter
    from napari_dip.engine.presets import settings_for
    from napari_dip.restore import forward_model_for

    rng = np.random.default_rng(seed)
    kwargs = {}
    if task == "inpaint":
        kwargs["mask"] = rng.random((size, size)) < 0.5
        observed = np.where(kwargs["mask"], 0, rng.random((size, size))).astype(np.float32)
    elif task == "super-resolve":
        kwargs["factor"] = 4
        observed = rng.random((size // 4, size // 4)).astype(np.float32)
    else:
        raise SystemExit(f"--task is inpaint or super-resolve, got {task!r}")
    chw, layout, _ = prepare_image(observed)
    net, fit = settings_for(task, preset, factor=kwargs.get("factor"), iterations=10**7, device="cpu", seed=seed)
    # The rule's work stays in every iteration; only its decision to stop is put off.
    fit = replace(fit, stopping=replace(fit.stopping, patience=10**9))
    return {name: Fitter(chw, forward_model_for(task, layout, **kwargs), network_overrides(net, changes), fit)
            for name, changes in variants.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="inpaint")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--variants", default="cheap=padding=zeros+merge_norm=false+conv_bias=false")
    parser.add_argument("--block", type=int, default=20, help="iterations per timed block")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the block times as JSON")
    options = parser.parse_args(argv)

    runs = {name: fitter.run(snapshot_every=options.block)
            for name, fitter in fits(options.task, options.preset, options.size, parse_variants(options.variants)).items()}
    for run in runs.values():
        next(run)  # a first block each, untimed: allocation, first-call costs
    times = {name: [] for name in runs}
    order = list(runs)
    for round_ in range(options.rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            next(runs[name])
            times[name].append((time.perf_counter() - start) / options.block * 1000)
    base = statistics.median(times["base"])
    print(f"{options.task}, {options.preset}, {options.size}², {options.rounds} rounds of {options.block} iterations")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:12s} {median:7.1f} ms an iteration  {base / median:5.2f}x")
    if options.out:
        options.out.write_text(json.dumps({
            "command": " ".join(sys.argv), "machine": f"{platform.machine()}, {platform.processor() or ''}".strip(", "),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "variants": parse_variants(options.variants), "ms_per_iteration_by_block": times,
            "median_ms": {name: statistics.median(values) for name, values in times.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
