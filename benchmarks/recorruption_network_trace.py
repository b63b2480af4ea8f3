"""PSNR over time of recorrupted denoising fits with smaller networks, or fitted on crops.

    python benchmarks/recorruption_network_trace.py --image 0 --sigma 25 --alpha 1.5 --variants full,w16d3
    python benchmarks/recorruption_network_trace.py --image 0 --variants full,crop64k4,crop64k4b2

A plain loop like ``recorruption_trace.py``'s: recorruption with ``--alpha`` at the true
sigma (input ``y + alpha * n``, target ``y - n / alpha``, fresh ``n`` every step), Adam at
0.01, the running average of outputs at weight 0.99, on a centre crop of one image of
``--set`` with Gaussian noise (seeds as in ``quality.py``, rounded to 8 bits), no held-out
pixels, no stop. Every 25 iterations it stores the iteration, the seconds of fitting so far
(the PSNR computations excluded) and the running average's PSNR against the clean crop. The
variants are letter-number pairs on top of ``full`` (the ``fast`` denoising network, 32
channels in 5 scales, fitted on the whole image):

* ``wN``: N channels per scale, ``dN``: N scales, ``sN``: N skip channels, ``lrX``: the
  learning rate (``w16d3``: 16 channels in 3 scales, the ``fast`` recorruption network);
* ``pN``: the network runs at 1/N of the resolution on N² times the channels: the image is
  folded into N x N blocks (``pixel_unshuffle``) on the way in and unfolded on the way out;
* ``cropN``: each step fits a random N x N crop (``bN`` of them as a batch), and every
  ``kN`` steps a forward pass over the whole image enters the running average (at the
  weight of N steps);
* ``bN`` without a crop: N recorruptions of the whole image as a batch, each step (the
  running average takes their mean output);
* ``mX``, ``vX``: Adam's beta1 and beta2 (0.9 and 0.999), ``aX``: the running average's
  weight (0.99);
* ``rN``: the network's output is its input plus a correction (no sigmoid), so a fit
  starts from the noisy image instead of grey; ``r1`` starts the correction at zero (the
  last convolution's weights zeroed), ``r2`` from the random initialisation.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recorruption_trace import crop_arguments, noisy_crop, write_traces  # noqa: E402

DEFAULTS = {"crop": None, "k": 1, "b": 1, "lr": 0.01, "w": 32, "d": 5, "s": 4, "p": 1, "r": 0, "m": 0.9, "v": 0.999, "a": 0.99}


class _Residual:
    """``x -> x + network(x)``, the correction network's parameters as its own."""

    def __init__(self, network):
        self.network = network

    def __call__(self, x):
        return x + self.network(x)

    def parameters(self):
        return self.network.parameters()


FLOATS = ("lr", "m", "v", "a")


def parse_variant(text: str) -> dict:
    """``"w16d3"`` -> the defaults with ``w=16, d=3``."""
    values = dict(DEFAULTS)
    if text == "full":
        return values
    pairs = re.findall(r"([a-z]+)([\d.]+)", text)
    if not pairs or "".join(k + v for k, v in pairs) != text or any(k not in DEFAULTS for k, _ in pairs):
        raise SystemExit(f"bad variant {text!r}: full, or pairs of {sorted(DEFAULTS)} and numbers, e.g. w16d3")
    for key, value in pairs:
        values[key] = float(value) if key in FLOATS else int(value)
    return values


def build_network(cfg: dict, channels: int):
    """The variant's network for images of ``channels`` channels (torch's seed as it stands)."""
    import torch

    from napari_dip.engine.networks import FAST_DENOISE, SkipNet

    depth, fold = cfg["d"], cfg["p"]
    network = SkipNet(replace(FAST_DENOISE.with_width(cfg["w"]), input_channels=channels * fold**2,
                              channels_down=(cfg["w"],) * depth, channels_up=(cfg["w"],) * depth,
                              channels_skip=(cfg["s"],) * depth, output_sigmoid=not cfg["r"]),
                      channels * fold**2)
    if cfg["r"] == 1:
        with torch.no_grad():
            network.head.weight.zero_()
            network.head.bias.zero_()
    if fold > 1:
        network = torch.nn.Sequential(torch.nn.PixelUnshuffle(fold), network, torch.nn.PixelShuffle(fold))
    return _Residual(network) if cfg["r"] else network


def main(argv=None) -> int:
    parser = crop_arguments(__doc__.splitlines()[0], "full,w16d3")
    parser.add_argument("--alpha", type=float, default=1.5, help="recorruption's split of the fresh noise")
    options = parser.parse_args(argv)
    variants = {text: parse_variant(text) for text in options.variants.split(",")}  # fail before any fit
    quality, name, clean, y = noisy_crop(options)
    import torch

    sigma = options.sigma / 255
    channels, height, width = y.shape[1:]
    alpha = options.alpha
    case = f"{options.set}/{name} {options.size}² σ{options.sigma:g} α{alpha:g}"
    print(case, flush=True)

    traces = {}
    for text, cfg in variants.items():
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1)
        network = build_network(cfg, channels)
        optimizer = torch.optim.Adam(network.parameters(), lr=cfg["lr"], betas=(cfg["m"], cfg["v"]))
        every = cfg["k"]
        weight = cfg["a"]
        decay = weight ** every
        average, trace, start, scoring = None, [], time.perf_counter(), 0.0
        for iteration in range(1, options.iterations + 1):
            if cfg["crop"]:
                size, inputs, targets = cfg["crop"], [], []
                for _ in range(cfg["b"]):
                    i = int(torch.randint(0, height - size + 1, (1,), generator=generator))
                    j = int(torch.randint(0, width - size + 1, (1,), generator=generator))
                    patch = y[:, :, i:i + size, j:j + size]
                    fresh = sigma * torch.randn(patch.shape, generator=generator)
                    inputs.append(patch + alpha * fresh)
                    targets.append(patch - fresh / alpha)
                net_input, target = torch.cat(inputs), torch.cat(targets)
            else:
                fresh = sigma * torch.randn((cfg["b"], *y.shape[1:]), generator=generator)
                net_input, target = y + alpha * fresh, y - fresh / alpha
            output = network(net_input)
            loss = ((output - target) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                if not cfg["crop"]:
                    mean = output.detach().mean(0, keepdim=True)
                    average = mean if average is None else average.mul_(weight).add_(mean, alpha=1 - weight)
                elif iteration % every == 0:
                    whole = network(y + alpha * sigma * torch.randn(y.shape, generator=generator))
                    average = whole.clone() if average is None else average.mul_(decay).add_(whole, alpha=1 - decay)
            if iteration % 25 == 0 and average is not None:
                began = time.perf_counter()
                image = average[0].numpy()
                image = image[0] if channels == 1 else np.moveaxis(image, 0, -1)
                trace.append([iteration, round(began - start - scoring, 2), round(float(quality.psnr(clean, image)), 3)])
                scoring += time.perf_counter() - began
        peak = max(trace, key=lambda row: row[2])
        print(f"{text}: peak {peak[2]:.2f} dB at {peak[0]} ({peak[1]:.1f} s); every 100: "
              + ", ".join(f"{i}: {s:.0f} s {p:.2f}" for i, s, p in trace if i % 100 == 0), flush=True)
        traces[text] = trace
    write_traces(options, case, traces)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
