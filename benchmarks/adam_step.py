"""Milliseconds per Adam update of a network's weights: PyTorch's per-tensor loop against
its fused kernel, the optimiser step alone.

    python benchmarks/adam_step.py --networks recorruption:fast,fast --threads 1,2

A whole fit step is too noisy on a shared 2-core machine to show a few per cent (whole-step
timings swing 10 % from block to block); this times only ``optimizer.step()`` on fixed
random gradients, ``--steps`` updates per block, both kinds alternating for ``--rounds``
blocks each, and reports the fastest block of each (the least disturbed). The difference is
what the engine's fused Adam (``Fitter`` on the CPU) saves per iteration.

Networks: ``fast`` or ``paper`` (:data:`~napari_dip.engine.networks.NETWORK_PRESETS`, the
denoising network) or ``recorruption:fast`` (the network fitted by recorruption, the CPU
default), for a grey image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def network(name: str):
    sys.path.insert(0, str(ROOT / "src"))
    from napari_dip.engine.networks import NETWORK_PRESETS, RECORRUPTION_NETWORKS, SkipNet

    if name.startswith("recorruption:"):
        config = RECORRUPTION_NETWORKS[name.split(":", 1)[1]]
    elif name in NETWORK_PRESETS:
        config = NETWORK_PRESETS[name]["default"]
    else:
        raise SystemExit(f"unknown network {name!r}: fast, paper or recorruption:fast")
    return SkipNet(config, 1)


def time_updates(parameters, fused: bool, steps: int) -> float:
    """Seconds per update of a fresh Adam after a short untimed warm-up."""
    import torch

    optimizer = torch.optim.Adam(parameters, lr=0.01, fused=fused)
    for _ in range(10):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def measure(name: str, threads: int, steps: int, rounds: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    parameters = list(network(name).parameters())
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter)
    blocks = {"per-tensor": [], "fused": []}
    for round_ in range(rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        for fused in order:
            blocks["fused" if fused else "per-tensor"].append(time_updates(parameters, fused, steps))
    return {"network": name, "threads": threads, "tensors": len(parameters),
            "weights": sum(p.numel() for p in parameters),
            **{f"{kind} ms": min(times) * 1e3 for kind, times in blocks.items()}, "blocks": blocks}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default="recorruption:fast,fast")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=500, help="updates per timed block")
    parser.add_argument("--rounds", type=int, default=6, help="timed blocks of each kind")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    import torch

    print(f"Adam update alone, fastest of {options.rounds} blocks of {options.steps}, torch {torch.__version__}, "
          f"{date.today()}")
    print("| network | threads | tensors | weights | per-tensor (ms) | fused (ms) | saved (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in options.networks.split(","):
        for threads in (int(t) for t in options.threads.split(",")):
            row = measure(name, threads, options.steps, options.rounds)
            rows.append(row)
            print(f"| {name} | {threads} | {row['tensors']} | {row['weights']} | {row['per-tensor ms']:.3f} | "
                  f"{row['fused ms']:.3f} | {row['per-tensor ms'] - row['fused ms']:.3f} |", flush=True)
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps({"date": str(date.today()), "torch": torch.__version__,
                                           "command": " ".join(sys.argv), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
