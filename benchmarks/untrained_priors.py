"""Other untrained priors against the engine's ``fast`` network, on one Set12 crop (issue 9).

Is there an untrained network that reaches DIP's quality in fewer or cheaper steps? Each
prior is fitted to a 128² Set12 crop with Gaussian noise (sigma 25, rounded to 8 bits, noise
seeds as in ``quality.py``) for a fixed number of steps, without a stopping rule; the PSNR
of the output and of its running average (weight 0.99, as the engine) is recorded every 10
steps, and the best of each is printed with the time per step. No stopping rule: this asks
what each prior can reach at all, an upper bound on what a stop could return.

* ``dip``: the engine's ``fast`` network and schedule (Adam, lr 0.01, input jitter from sigma);
* ``projector``: after the Deep Random Projector idea (Li et al., CVPR 2023): the skip
  network's convolutions keep their random weights; only the input and the batch-norm
  scales and shifts are fitted (Adam, lr 0.1), optionally with a total-variation term;
* ``decoder``: a Deep Decoder-like network (Heckel & Hand, ICLR 2019): 1x1 convolutions,
  bilinear upsampling, ReLU and batch norm, from a 16x smaller input tensor.

    python benchmarks/untrained_priors.py --priors dip,projector,projector:tv=0.05,decoder

This is our own reading of those papers, not their code; their published settings were
tuned on GPUs and other images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = {"dip": 1500, "projector": 600, "decoder": 3000}


def parse_prior(text: str) -> tuple[str, dict]:
    """``projector:tv=0.05;lr=0.1`` -> ("projector", {"tv": 0.05, "lr": 0.1})."""
    name, _, rest = text.partition(":")
    if name not in STEPS:
        raise SystemExit(f"unknown prior {name!r}; choose from {sorted(STEPS)}")
    options = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        options[key] = float(value)
    return name, options


def build(name: str, options: dict, size: int, sigma: float):
    """(network, input, parameters to fit, learning rate, jitter, tv weight) for a prior."""
    import torch
    from torch import nn

    from napari_dip.engine.networks import SkipNet, SkipNetConfig

    torch.manual_seed(0)
    if name == "dip":
        from napari_dip.engine.presets import settings_for

        config, fit = settings_for("denoise", "fast", noise_sigma=sigma)
        net = SkipNet(config, 1)
        z = torch.rand(1, config.input_channels, config.padded_size(size), config.padded_size(size)) * 0.1
        return net, z, list(net.parameters()), fit.learning_rate, fit.reg_noise_std, 0.0
    if name == "projector":
        scales, width = int(options.get("scales", 1)), int(options.get("width", 64))
        depth = int(options.get("in", 32))
        config = SkipNetConfig(input_channels=depth, channels_down=(width,) * scales,
                               channels_up=(width,) * scales, channels_skip=(4,) * scales)
        net = SkipNet(config, 1)
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        norms = [p for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in (m.weight, m.bias)]
        for parameter in norms:
            parameter.requires_grad_(True)
        padded = config.padded_size(size)
        if options.get("normal"):  # the authors' released code draws the seed from N(0, 0.1²)
            z = (torch.randn(1, depth, padded, padded) * 0.1).requires_grad_()
        else:
            z = (torch.rand(1, depth, padded, padded) * 0.1).requires_grad_()
        if options.get("inbn"):  # their code also passes the seed through a trainable batch norm
            seed_norm = nn.BatchNorm2d(depth)
            net = nn.Sequential(seed_norm, net)
            norms += [seed_norm.weight, seed_norm.bias]
        return net, z, [z, *norms], options.get("lr", 0.1), 0.0, options.get("tv", 0.0)
    width = int(options.get("width", 64))
    layers: list[nn.Module] = []
    for level in range(5):
        layers += [nn.Conv2d(width, width, 1, bias=False)]
        if level < 4:
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
        layers += [nn.ReLU(), nn.BatchNorm2d(width)]
    net = nn.Sequential(*layers, nn.Conv2d(width, 1, 1), nn.Sigmoid())
    z = torch.rand(1, width, size // 16, size // 16) * 0.1
    return net, z, list(net.parameters()), options.get("lr", 0.01), 0.0, 0.0


def fit(name: str, options: dict, clean: np.ndarray, noisy: np.ndarray, steps: int, sigma: float, psnr) -> dict:
    import torch

    size = clean.shape[0]
    net, z, parameters, learning_rate, jitter, tv_weight = build(name, options, size, sigma)
    observed = torch.tensor(noisy, dtype=torch.float32)[None, None]
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    average = None
    trace = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        net_input = z + jitter * torch.randn_like(z) if jitter else z
        full = net(net_input)
        top, left = (full.shape[-2] - size) // 2, (full.shape[-1] - size) // 2
        output = full[..., top:top + size, left:left + size]
        loss = ((output - observed) ** 2).mean()
        if options.get("rmse"):  # their code minimises the root of the mean squared error
            loss = loss.sqrt()
        if tv_weight:
            loss = loss + tv_weight * ((output[..., 1:, :] - output[..., :-1, :]).abs().mean()
                                       + (output[..., :, 1:] - output[..., :, :-1]).abs().mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        output = output.detach()
        average = output.clone() if average is None else average.mul_(0.99).add_(output, alpha=0.01)
        if step % 10 == 0:
            trace.append((step, psnr(clean, output[0, 0].numpy()), psnr(clean, average[0, 0].numpy())))
    seconds = time.perf_counter() - start
    best_output = max(trace, key=lambda row: row[1])
    best_average = max(trace, key=lambda row: row[2])
    return {"prior": name, "options": options, "steps": steps, "ms_per_step": 1000 * seconds / steps,
            "best_output": {"step": best_output[0], "psnr": best_output[1]},
            "best_average": {"step": best_average[0], "psnr": best_average[2]},
            "seconds_to_best_average": seconds * best_average[0] / steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--image", type=int, default=0, help="Set12 image index (0: the first)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--priors", default="dip,projector,projector:tv=0.05,decoder",
                        help="comma-separated; options after ':' separated by ';' (tv, lr, scales, width; "
                             "projector also in (seed channels), normal, inbn, rmse)")
    parser.add_argument("--steps", type=int, help="steps for every prior (default: dip 1500, projector 600, decoder 3000)")
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)

    import quality

    name, path = quality.list_images(options.data, "Set12", options.image + 1)[options.image]
    clean = quality.to_unit(quality.centre_crop(quality.load_uint8(path), options.crop))
    noisy = quality.add_gaussian_noise(clean, options.sigma / 255, quality.image_seed(0, "Set12", name, options.sigma))
    noisy = np.round(noisy * 255) / 255  # the noisy image as an 8-bit file holds it
    rows = []
    for text in options.priors.split(","):
        prior, settings = parse_prior(text)
        row = fit(prior, settings, clean, noisy, options.steps or STEPS[prior], options.sigma / 255, quality.psnr)
        rows.append(row)
        print(f"{text:28s} {row['ms_per_step']:6.1f} ms/step  output best {row['best_output']['psnr']:.2f} dB "
              f"(step {row['best_output']['step']})  average best {row['best_average']['psnr']:.2f} dB "
              f"(step {row['best_average']['step']}, {row['seconds_to_best_average']:.0f} s)", flush=True)
    if options.out:
        options.out.write_text(json.dumps({"image": f"Set12/{name}", "crop": options.crop, "sigma": options.sigma,
                                           "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
