"""Cost of one ES-WMV update, against recomputing the window's variance from scratch.

    PYTHONPATH=src python benchmarks/wmv_cost.py

One CPU thread, the default rule settings (window 100, at most 16384 sampled values) on a
3 x 128 x 128 output; both timings come from the same process.
"""

import time

import torch

from napari_dip.engine.stopping import StoppingConfig, WindowedVariance


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = StoppingConfig()
    rule = WindowedVariance(config, (3, 128, 128), torch.device("cpu"), seed=0)
    outputs = torch.rand(400, 1, 3, 128, 128)
    window = torch.rand(config.window, config.max_samples)  # what the earlier rule reduced every step
    for i in range(1, 201):  # fill the ring first
        rule.update(i, outputs[i - 1], outputs[i - 1])
    start = time.perf_counter()
    for i in range(201, 401):
        rule.update(i, outputs[i - 1], outputs[i - 1])
    running = (time.perf_counter() - start) / 200
    start = time.perf_counter()
    for _ in range(200):
        window.var(dim=0, unbiased=False).mean()
    recompute = (time.perf_counter() - start) / 200
    print(f"update with running sums {running * 1e3:.2f} ms; variance of the whole window "
          f"{recompute * 1e3:.2f} ms ({recompute / running:.0f}x)")


if __name__ == "__main__":
    main()
