"""Can a fit start from a network fitted elsewhere and reach its result sooner?

    python benchmarks/borrowed_start.py --images 0,1 --sigma 25 --modes cold,sub,sub-full,donor,sub-apply

The engine's default denoising (recorruption, the CPU's network, the automatic stop, true
sigma, one thread, seed 0) on 128² Set12 centre crops (noise as ``quality.py`` makes it,
rounded to 8 bits), started in different ways:

* ``cold``: from scratch, as the engine does;
* ``sub``: first a fit of one polyphase sub-image (every second pixel in both directions,
  64²: the same noise level, a quarter of the pixels, so about 2.5 times cheaper per step),
  then the whole image warm-started from that network as a stack's next plane is
  (:func:`~napari_dip.engine.presets.warm_start_config`: a fraction of the learning rate,
  a tenth until 2026-11-28 and half since, at most 150 iterations);
* ``sub-full``: the same, but the whole image's fit has the cold fit's settings;
* ``donor``: the first fit is of another Set12 crop (the image six places on), then the
  warm start as in ``sub``;
* ``sub-apply``: no second fit: the sub-image's network is applied to the whole image, and
  to each of its four polyphase sub-images (interleaved back), averaging 16 recorrupted
  inputs, as a denoiser trained on one sub-image.

Each line gives seconds (first fit, second fit), iterations and the PSNR of the result.
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
MODES = ("cold", "sub", "sub-full", "donor", "sub-apply")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--images", default="0,1", help="Set12 indices")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path)
    options = parser.parse_args(argv)
    modes = options.modes.split(",")
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch

    from napari_dip.engine.fit import Fitter, _padded
    from napari_dip.engine.forward import Identity
    from napari_dip.engine.presets import settings_for, warm_start_config
    from recorruption_trace import noisy_crop

    sigma = options.sigma

    def crop(index):
        """Set12 crop ``index`` (wrapping round the set): name, clean crop, noisy (1, H, W)."""
        crop_options = argparse.Namespace(data=options.data, set="Set12", image=index % 12, size=128,
                                          sigma=sigma, threads=1)
        quality, name, clean, y = noisy_crop(crop_options)
        return quality, name, clean, y[0].numpy()

    network, config = settings_for("denoise", "auto", noise_sigma=sigma / 255, device="cpu", seed=0, threads=1)

    def run(image, fit_config, state=None):
        start = time.perf_counter()
        fitter = Fitter(image, Identity(), network, fit_config, initial_state=state)
        for snapshot in fitter.run(snapshot_every=10**9):
            pass
        return fitter, snapshot, round(time.perf_counter() - start, 1)

    def padded_input(image):
        """``image`` as a recorrupted fit's network takes it, padded as the fitter pads it,
        and the region that takes it back out."""
        height, width = image.shape[1:]
        padded = (network.padded_size(height), network.padded_size(width))
        region = tuple(slice((p - n) // 2, (p - n) // 2 + n) for p, n in zip(padded, (height, width)))
        return _padded(torch.as_tensor(image)[None], region, padded), region

    def start_from(fitter, image):
        """The fitter's state for a fit of ``image``: a recorrupted fit's input is its own
        image, so only the weights carry over."""
        state = fitter.export_state()
        state.input = padded_input(image)[0]
        return state

    @torch.no_grad()
    def apply(net, image, draws=16):
        x, region = padded_input(image)
        generator = torch.Generator().manual_seed(7)
        spread = config.recorrupt_alpha * config.recorrupt_sigma
        total = sum(net(x + spread * torch.randn(x.shape, generator=generator))[..., region[0], region[1]]
                    for _ in range(draws))
        return (total / draws)[0, 0].numpy()

    def psnr(clean, estimate):
        return round(quality.psnr(clean, estimate), 2)

    rows = []
    for index in (int(i) for i in options.images.split(",")):
        quality, name, clean, y = crop(index)
        sub = np.ascontiguousarray(y[:, ::2, ::2])
        for mode in modes:
            row = {"image": f"Set12/{name}", "sigma": sigma, "mode": mode}
            if mode == "cold":
                _, snap, seconds = run(y, config)
                row.update(seconds=[seconds], iterations=[snap.iteration], psnr=psnr(clean, snap.average[0]))
            elif mode == "donor":
                _, donor_name, _, donor = crop(index + 6)
                first, first_snap, first_seconds = run(donor, config)
                _, snap, seconds = run(y, warm_start_config(config), first.export_state())
                row.update(donor=f"Set12/{donor_name}", seconds=[first_seconds, seconds],
                           iterations=[first_snap.iteration, snap.iteration], psnr=psnr(clean, snap.average[0]))
            else:
                first, first_snap, first_seconds = run(sub, config)
                row.update(sub_psnr=psnr(clean[::2, ::2], first_snap.average[0]))
                if mode == "sub-apply":
                    whole = apply(first.network, y)
                    assembled = np.zeros_like(clean, dtype=np.float32)
                    for i in range(2):
                        for j in range(2):
                            assembled[i::2, j::2] = apply(first.network, np.ascontiguousarray(y[:, i::2, j::2]))
                    row.update(seconds=[first_seconds], iterations=[first_snap.iteration],
                               psnr=psnr(clean, whole), psnr_polyphase=psnr(clean, assembled))
                else:
                    second = warm_start_config(config) if mode == "sub" else config
                    _, snap, seconds = run(y, second, start_from(first, y))
                    row.update(seconds=[first_seconds, seconds], iterations=[first_snap.iteration, snap.iteration],
                               psnr=psnr(clean, snap.average[0]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    if options.out:
        options.out.parent.mkdir(parents=True, exist_ok=True)
        options.out.write_text(json.dumps({"command": " ".join(sys.argv), "torch": torch.__version__,
                                           "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
