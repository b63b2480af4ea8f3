"""What a super-resolution fit's iteration costs beyond the bare step of its network.

    python benchmarks/sr_iteration_cost.py --iterations 200

A ×4 super-resolution fit of ``fast`` (Set5 baby, a 128² centre crop shrunk to 32² with
PIL's Lanczos as ``quality.py`` does) runs through the public API (``iter_restore``), and
its seconds per iteration from the first snapshot on are set beside those of the bare
loop of the same network in the same process: jittered input, forward, the Lanczos
downsampler, squared error, backward, Adam (β₂ 0.95, as ``fast`` fits this task). The
difference is what the engine adds (stopping rule, running average, checks); where it is
small, only a cheaper network or fewer iterations can shorten the fit.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def low_resolution(data: Path, name: str, crop: int, factor: int) -> np.ndarray:
    import quality

    path = dict(quality.list_images(data, "Set5", 5))[name]
    high = quality.crop_to_multiple(quality.centre_crop(quality.load_uint8(path), crop), factor)
    return quality.make_lr(high, factor).astype(np.float32) / 255


def engine_seconds_per_iteration(low: np.ndarray, factor: int, iterations: int, every: int) -> float:
    from napari_dip.restore import iter_restore

    marks = [(s.iteration, s.elapsed) for s in iter_restore(
        "super-resolve", low, factor=factor, preset="fast", iterations=iterations, snapshot_every=every, seed=0)]
    (first, started), (last, ended) = marks[0], marks[-1]
    return (ended - started) / (last - first)


def bare_seconds_per_step(low: np.ndarray, factor: int, steps: int, warmup: int) -> float:
    import torch

    from napari_dip.engine.forward import LanczosDownsampler
    from napari_dip.engine.networks import SkipNet
    from napari_dip.engine.presets import settings_for

    network_config, fit = settings_for("super-resolve", "fast", factor=factor, device="cpu")
    torch.manual_seed(0)
    channels = low.shape[2]
    network = SkipNet(network_config, channels)
    size = network_config.padded_size(low.shape[0] * factor)
    noise = torch.rand(1, network_config.input_channels, size, size) * network_config.input_scale
    target = torch.from_numpy(low).permute(2, 0, 1)[None]
    downsample = LanczosDownsampler(factor, channels)
    optimizer = torch.optim.Adam(network.parameters(), lr=fit.learning_rate, betas=(0.9, fit.adam_beta2), fused=True)

    def step():
        output = network(noise + torch.randn_like(noise) * fit.reg_noise_std)
        loss = ((downsample(output) - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main(argv=None) -> int:
    import quality

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=quality.DEFAULT_DATA)
    parser.add_argument("--image", default="baby")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=200, help="the engine's fit, and as many bare steps")
    parser.add_argument("--every", type=int, default=50, help="a snapshot every N iterations")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    import torch

    low = low_resolution(options.data, options.image, options.crop, options.factor)
    engine = engine_seconds_per_iteration(low, options.factor, options.iterations, options.every)
    bare = bare_seconds_per_step(low, options.factor, options.iterations, warmup=20)
    result = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "image": options.image,
              "crop": options.crop, "factor": options.factor, "iterations": options.iterations,
              "engine_ms_per_iteration": engine * 1e3, "bare_ms_per_step": bare * 1e3}
    print(f"{options.image} {options.crop}² from {options.crop // options.factor}²: engine "
          f"{engine * 1e3:.1f} ms an iteration, bare step {bare * 1e3:.1f} ms ({engine / bare:.2f}x)")
    if options.out:
        options.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
