"""How far clipping at the ends of the range pulls the Gaussian noise estimate down, and how
much a correction for it (not used by the engine) gets back.

    python benchmarks/noise_estimate_clipping.py --sizes 128,256 --sigmas 25,50
    python benchmarks/noise_estimate_clipping.py --sizes 128 --fits   # and what each sigma gives

``--fits`` also denoises each crop by recorruption (``fast`` preset, the engine's automatic
stop, seed 0) with the true sigma, the engine's estimate, the corrected one and the smooth
mid-range one given as ``recorrupt_sigma``, and prints the PSNR of each result.

For the first four Set12 images and the first two CSet9 images (centre crops, noise as in
``time_to_result.py``: seeds of ``quality.py``, rounded to 8 bits) it prints the true sigma,
the engine's estimate (``restore.estimate_noise``: scikit-image's wavelet estimate, the
mean over channels) and a corrected one. The correction models each pixel as censored at
the channel's lowest and highest value: with a normal of mean ``mu`` and the sought sigma,
the censored value's variance is known in closed form; the pixel's ``mu`` is read off its
5x5 local mean through the censored mean. The corrected sigma is the one whose predicted
root-mean-square spread over the channel's pixels equals the plain estimate (bisection
between it and twice it). Recorruption needs sigma within a few per cent in both
directions (BENCHMARKS.md, "A smaller network for recorruption"), which is why this is a
benchmark and not the engine's estimate yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def censored_moments(mu: np.ndarray, sigma: float, low: float, high: float):
    """Mean and variance of ``clip(X, low, high)`` for ``X ~ N(mu, sigma²)``."""
    from scipy.stats import norm

    a, b = (low - mu) / sigma, (high - mu) / sigma
    below, inside = norm.cdf(a), norm.cdf(b) - norm.cdf(a)
    above = 1 - norm.cdf(b)
    pa, pb = norm.pdf(a), norm.pdf(b)
    mean = low * below + high * above + mu * inside + sigma * (pa - pb)
    second = (low**2 * below + high**2 * above + (mu**2 + sigma**2) * inside + 2 * mu * sigma * (pa - pb)
              + sigma**2 * (a * pa - b * pb))
    return mean, np.maximum(second - mean**2, 0.0)


def corrected_sigma(channel: np.ndarray, plain: float) -> float:
    """The sigma whose censored spread over ``channel``'s pixels matches ``plain``."""
    from scipy import ndimage

    low, high = float(channel.min()), float(channel.max())
    local = ndimage.uniform_filter(channel.astype(np.float64), size=5, mode="reflect").ravel()
    grid = np.linspace(low - 12 * plain, high + 12 * plain, 2001)

    def spread(sigma: float) -> float:
        mean, variance = censored_moments(grid, sigma, low, high)
        return float(np.sqrt(np.interp(local, mean, variance).mean()))

    if not plain > 0 or spread(plain) >= 0.999 * plain:
        return plain
    lower, upper = plain, 2 * plain
    for _ in range(40):
        middle = (lower + upper) / 2
        lower, upper = (middle, upper) if spread(middle) < plain else (lower, middle)
    return (lower + upper) / 2


def smooth_midrange_sigma(channel: np.ndarray, plain: float, margin: float = 2.5, fraction: float = 0.25) -> float:
    """Median absolute diagonal Haar detail of the smoothest blocks away from the extremes.

    Blocks whose 6x6 local mean lies within ``margin`` plain sigmas of the channel's lowest
    or highest value (where clipping lowers the spread) or that touch an extreme are left
    out; of the rest, the ``fraction`` with the least texture (variance of the surrounding
    block means, which white noise's diagonal detail does not change) are kept, so that
    edges and texture, which remain in mid-range regions, do not raise the median.
    """
    from napari_dip.noise import _detail_and_mean

    low, high = float(channel.min()), float(channel.max())
    clipped = (channel <= low) | (channel >= high)
    detail, mean, hit, texture = _detail_and_mean(channel.astype(np.float64), clipped)
    keep = ~hit & (mean > low + margin * plain) & (mean < high - margin * plain)
    if keep.sum() < 256:
        return plain
    smooth = keep & (texture <= np.quantile(texture[keep], fraction))
    return float(np.median(np.abs(detail[smooth])) / 0.6744897501960817)


def fitted(noisy_uint8: np.ndarray, sigma: float) -> np.ndarray:
    """The automatically stopped ``fast`` denoising of ``noisy_uint8``, recorrupted at ``sigma``
    (the engine's noise estimate replaced by it, so that everything else runs as for a user)."""
    from unittest import mock

    from napari_dip import restore

    with mock.patch.object(restore, "estimate_noise", lambda chw: float(sigma)):
        for final in restore.iter_restore("denoise", noisy_uint8, preset="fast", device="cpu", seed=0,
                                          snapshot_every=None, recorrupt=True):
            pass
    assert abs(final.settings["fit"]["recorrupt_sigma"] - sigma) < 1e-9, final.settings["fit"]
    return final.average


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--sigmas", default="25,50")
    parser.add_argument("--fits", action="store_true", help="also fit each crop with each sigma (slow)")
    options = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time_to_result
    from skimage.restoration import estimate_sigma

    from napari_dip.restore import estimate_noise

    quality = time_to_result._load_quality()
    fits = " | PSNR (dB) with true / estimate / corrected / mid-range" if options.fits else ""
    print(f"| crop | size | true σ | estimate | corrected | smooth mid-range | pixels at the extremes{fits} |")
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---|" if fits else ""))
    for set_name, count in (("Set12", 4), ("CSet9", 2)):
        for name, path in quality.list_images(options.data, set_name, None)[:count]:
            for size in (int(s) for s in options.sizes.split(",")):
                clean = quality.to_unit(quality.centre_crop(quality.load_uint8(path), size))
                for sigma in (float(s) for s in options.sigmas.split(",")):
                    noisy = quality.add_gaussian_noise(clean, sigma / 255, quality.image_seed(0, set_name, name, sigma))
                    noisy8 = np.round(noisy * 255) / 255
                    chw = noisy8[None] if noisy8.ndim == 2 else np.moveaxis(noisy8, -1, 0)
                    plain = [float(estimate_sigma(channel)) for channel in chw]
                    corrected = np.mean([corrected_sigma(c, p) for c, p in zip(chw, plain)])
                    midrange = np.mean([smooth_midrange_sigma(c, p) for c, p in zip(chw, plain)])
                    extremes = np.mean([((c == c.min()) | (c == c.max())).mean() for c in chw])
                    scores = ""
                    if options.fits:
                        noisy_uint8 = np.round(noisy * 255).astype(np.uint8)
                        scores = " / ".join(f"{quality.psnr(clean, quality.to_unit(fitted(noisy_uint8, s))):.2f}"
                                            for s in (sigma / 255, estimate_noise(chw), corrected, midrange)) + " |"
                    print(f"| {set_name}/{name} σ{sigma:g} | {size} | {sigma / 255:.3f} | {estimate_noise(chw):.3f} "
                          f"| {corrected:.3f} | {midrange:.3f} | {100 * extremes:.1f} % |{scores}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
