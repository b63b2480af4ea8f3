"""PSNR trajectory of denoising fits that differ in what the network is given and fitted to.

    python benchmarks/recorruption_trace.py --image 0 --sigma 25 --variants noise,image+r2r=1,image+r2r=2
    python benchmarks/recorruption_trace.py --set CSet9 --image 0 --variants noise,image+r2r=1

A plain loop, not the engine's: the ``fast`` denoising network (32 channels per scale),
Adam at 0.01, the running average of outputs at weight 0.99 (whose PSNR against the clean
crop is printed every 100 iterations and stored every 25), on a centre crop of one image
of ``--set`` with Gaussian noise of ``--sigma`` (noise seeds as in ``quality.py``, rounded
to 8 bits), no held-out pixels, no stop. It answers "how high and how soon does the fit
peak" for each variant:

* ``noise``: the paper's way, a fixed 32-channel uniform noise input in [0, 0.1) jittered
  at every step with the engine's denoising jitter (a third of sigma, within 1/30 and 1/15),
  fitted to the noisy image;
* ``image``: the noisy image itself as the input (jittered likewise), fitted to itself;
  ``image+noise``: the image and 31 channels of the fixed noise;
* ``+r2r=A``: recorruption (Pang et al., CVPR 2021) instead of the jitter: at every step
  fresh noise ``n ~ N(0, sigma²)``, input ``image + A * n``, target ``image - n / A`` (the
  engine's ``FitConfig.recorrupt_sigma`` and ``recorrupt_alpha``);
* ``+lr=X``: another learning rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> dict:
    """``"image+r2r=1.5"`` -> ``{"image": "", "r2r": "1.5"}``."""
    parts = {}
    for part in text.split("+"):
        key, _, value = part.partition("=")
        if key not in ("noise", "image", "r2r", "lr") or key in parts or (key in ("r2r", "lr")) != bool(value):
            raise SystemExit(f"bad variant part {part!r} in {text!r}: use noise, image, image+noise, r2r=<a>, lr=<x>")
        parts[key] = value
    if "image" not in parts and "noise" not in parts:
        raise SystemExit(f"variant {text!r} names no input: noise, image or image+noise")
    if "r2r" in parts and "image" not in parts:
        raise SystemExit(f"variant {text!r}: recorruption needs the image as input")
    return parts


def crop_arguments(description: str, variants: str) -> argparse.ArgumentParser:
    """The options of the trace scripts: which crop, which noise, which variants, how long."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--set", default="Set12", help="Set12 (grey) or CSet9 (colour)")
    parser.add_argument("--image", type=int, default=0, help="index of the image in the set (0: its first)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=25.0, help="noise level in grey levels of 255")
    parser.add_argument("--variants", default=variants)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    return parser


def noisy_crop(options):
    """``(quality, name, clean, y)``: the ``quality`` module, the image's name, its clean
    centre crop (numpy, [0, 1]) and the noisy crop rounded to 8 bits as a ``(1, C, H, W)``
    tensor; also sets torch's thread count."""
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    import time_to_result

    torch.set_num_threads(options.threads)
    quality = time_to_result._load_quality()
    name, path = quality.list_images(options.data, options.set, None)[options.image]
    clean = quality.to_unit(quality.centre_crop(quality.load_uint8(path), options.size))
    noisy = quality.add_gaussian_noise(clean, options.sigma / 255,
                                       quality.image_seed(0, options.set, name, options.sigma))
    noisy8 = np.round(noisy * 255).astype(np.uint8)
    y = torch.as_tensor(noisy8.astype(np.float32) / 255)
    return quality, name, clean, (y[None] if y.ndim == 2 else y.permute(2, 0, 1).contiguous())[None]


def write_traces(options, case: str, traces: dict) -> None:
    """Store the traces with the case and the command that made them (``--out``)."""
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps({"case": case, "command": " ".join(sys.argv), "threads": options.threads,
                                           "traces": traces}, indent=1))


def main(argv=None) -> int:
    options = crop_arguments(__doc__.splitlines()[0], "noise,image+r2r=1").parse_args(argv)
    variants = {text: parse_variant(text) for text in options.variants.split(",")}  # fail before any fit
    quality, name, clean, y = noisy_crop(options)
    import torch

    from napari_dip.engine.networks import FAST_DENOISE, SkipNet

    sigma = options.sigma / 255
    channels, height, width = y.shape[1:]
    jitter = min(max(sigma / 3, 1 / 30), 1 / 15)
    case = f"{options.set}/{name} {options.size}² σ{options.sigma:g}"
    print(case, flush=True)

    traces = {}
    for text, parts in variants.items():
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        if "image" in parts:
            z = [y]
            if "noise" in parts:
                z.append(torch.rand((1, 31, height, width), generator=generator) * 0.1)
            z = torch.cat(z, 1)
        else:
            z = torch.rand((1, 32, height, width), generator=generator) * 0.1
        network = SkipNet(replace(FAST_DENOISE, input_channels=z.shape[1]), channels)
        optimizer = torch.optim.Adam(network.parameters(), lr=float(parts.get("lr") or 0.01))
        alpha = float(parts["r2r"]) if "r2r" in parts else None
        average, trace, start = None, [], time.perf_counter()
        for iteration in range(1, options.iterations + 1):
            if alpha is not None:
                fresh = sigma * torch.randn_like(y)
                net_input = z.clone()
                net_input[:, :channels] += alpha * fresh
                target = y - fresh / alpha
            else:
                net_input, target = z + jitter * torch.randn_like(z), y
            output = network(net_input)
            loss = ((output - target) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                average = output.detach().clone() if average is None else average.mul_(0.99).add_(output, alpha=0.01)
            if iteration % 25 == 0:
                image = average[0].numpy()
                image = image[0] if channels == 1 else np.moveaxis(image, 0, -1)
                trace.append([iteration, round(float(quality.psnr(clean, image)), 3)])
        peak = max(trace, key=lambda row: row[1])
        per_step = (time.perf_counter() - start) / options.iterations
        print(f"{text}: peak {peak[1]:.2f} dB at {peak[0]}; {1000 * per_step:.1f} ms/step; every 100: "
              + ", ".join(f"{i}: {p:.2f}" for i, p in trace if i % 100 == 0), flush=True)
        traces[text] = trace
    write_traces(options, case, traces)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
