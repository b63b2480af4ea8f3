"""Milliseconds per training step of ``fast``'s super-resolution and inpainting networks,
whole, with the encoder frozen, and with depthwise-separable convolutions.

    python benchmarks/structure_step_cost.py --rounds 2

The two changes are the ones ``benchmarks/stopping.py`` traces with ``--freeze-encoder``
and ``--separable`` (it builds them the same way). Each step is a bare one: the network on
a 32-channel noise input of ``--size``² with the presets' jitter of 0.03, a squared error
against a random target, and the fused Adam step the engine takes on a CPU. The three
variants of a network are timed one after the other in each round; the ratio is to the
whole network's time in the same round.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))  # stopping.py, whose variants these are

import stopping  # noqa: E402 - after the path it is found on


def step_ms(config, variant: str, size: int, steps: int, warmup: int = 5) -> float:
    import torch

    from napari_dip.engine.networks import SkipNet

    torch.manual_seed(0)
    with stopping.separable_convolutions(variant == "separable"):
        net = SkipNet(config, 1)
    if variant == "frozen encoder":
        stopping.freeze_encoder(net)
    optimizer = torch.optim.Adam([w for w in net.parameters() if w.requires_grad], lr=0.01, fused=True)
    z = torch.rand(1, config.input_channels, size, size) * config.input_scale
    target = torch.rand(1, 1, size, size)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = ((net(z + 0.03 * torch.randn_like(z)) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args(argv)

    from napari_dip.engine.networks import FAST, FAST_INPAINT

    print(f"{'network':16s} {'round':>5s} {'whole':>9s} {'frozen encoder':>20s} {'separable':>20s}")
    for name, config in (("super-resolve", FAST), ("inpaint", FAST_INPAINT)):
        for round_ in range(1, options.rounds + 1):
            times = {v: step_ms(config, v, options.size, options.steps)
                     for v in ("whole", "frozen encoder", "separable")}
            cells = [f"{times[v]:7.1f} ms ({times[v] / times['whole']:.2f}x)" for v in ("frozen encoder", "separable")]
            print(f"{name:16s} {round_:5d} {times['whole']:6.1f} ms " + " ".join(f"{c:>20s}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
