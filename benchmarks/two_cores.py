"""Can one image's fit use both cores of a 2-core CPU? Milliseconds per recorruption step.

The step is the engine's CPU default for denoising (the `fast` recorruption network, the
noisy image as input, a fresh recorruption each step, fused Adam), timed over ``--steps``
steps after 20 of warm-up, in each of these ways:

* ``eager1``, ``eager2``: the whole image, PyTorch with 1 or 2 threads;
* ``threads``: the image cut into two halves (each with a ``--halo`` of neighbouring
  columns, so that a convolution near the cut sees what it would see in the whole image),
  one half per Python thread, 1 PyTorch thread each, gradients summed in the shared network;
* ``processes``: the same halves in two processes of 1 thread each, gradients summed by
  ``torch.distributed`` (gloo) before each Adam step, as a data-parallel fit would;
* ``compiled1``, ``compiled2``: the whole image, the network through ``torch.compile``
  (inductor's kernels cached in ``--cache``; the first step's seconds are the compile, or
  its reuse when the cache is warm).

Only the seconds are measured, not what the split does to the result: a split fit also
normalises each half with its own batch statistics. Issue 9, BENCHMARKS.md "Two cores for
one fit"::

    python benchmarks/two_cores.py --sizes 128,256 --out benchmarks/results/two-cores-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from napari_dip.engine.networks import FAST_RECORRUPT, SkipNet

WAYS = ("eager1", "eager2", "threads", "processes", "compiled1", "compiled2")


def _setup(size: int, threads: int):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    network = SkipNet(replace(FAST_RECORRUPT, input_channels=1), 1)
    optimiser = torch.optim.Adam(network.parameters(), lr=0.01, fused=True)
    image = torch.rand(1, 1, size, size)
    return network, optimiser, image


def _halves(image: torch.Tensor, halo: int) -> list[torch.Tensor]:
    middle = image.shape[-1] // 2
    return [image[..., : middle + halo].contiguous(), image[..., middle - halo :].contiguous()]


def _backward(network, image: torch.Tensor) -> None:
    noise = 0.1 * torch.randn_like(image)
    loss = ((network(image + 1.5 * noise) - (image - noise / 1.5)) ** 2).mean()
    loss.backward()


def _time(step, steps: int) -> tuple[float, float]:
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return first, (time.perf_counter() - start) / steps * 1000


def _in_process(way: str, size: int, halo: int, steps: int) -> dict:
    threads = 2 if way in ("eager2", "compiled2") else 1
    network, optimiser, image = _setup(size, threads)
    model = torch.compile(network, dynamic=False) if way.startswith("compiled") else network
    halves = _halves(image, halo)

    def step():
        optimiser.zero_grad(set_to_none=True)
        if way == "threads":
            workers = [threading.Thread(target=_backward, args=(model, half)) for half in halves]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        else:
            _backward(model, image)
        optimiser.step()

    first, ms = _time(step, steps)
    return {"first_step_s": round(first, 2), "ms_per_step": round(ms, 2)}


def _process_worker(rank: int, size: int, halo: int, steps: int, rendezvous: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    network, optimiser, image = _setup(size, 1)
    half = _halves(image, halo)[rank]
    parameters = list(network.parameters())

    def step():
        optimiser.zero_grad(set_to_none=True)
        _backward(network, half)
        flat = torch.cat([p.grad.reshape(-1) for p in parameters])
        dist.all_reduce(flat)
        offset = 0
        for p in parameters:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        optimiser.step()

    first, ms = _time(step, steps)
    results[rank] = {"first_step_s": round(first, 2), "ms_per_step": round(ms, 2)}
    dist.destroy_process_group()


def _in_two_processes(size: int, halo: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as folder, mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_process_worker, args=(size, halo, steps, os.path.join(folder, "rendezvous"), results), nprocs=2)
        # The slower process sets the pace of the fit.
        return max(dict(results).values(), key=lambda r: r["ms_per_step"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128", help="comma-separated image sizes")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {WAYS}")
    parser.add_argument("--halo", type=int, default=16, help="columns each half takes from the other")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cache", default=None, help="inductor cache folder (default: a new temporary one)")
    parser.add_argument("--out", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="inductor-") as fresh:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.cache or fresh  # a fresh one: the compile is timed
        try:
            return _run(parser, args)
        finally:
            if before is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def _run(parser, args) -> int:
    ways = args.ways.split(",")
    unknown = [way for way in ways if way not in WAYS]
    if unknown:
        parser.error(f"unknown way(s) {unknown}; choose from {WAYS}")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for way in ways:
            if way == "processes":
                row = _in_two_processes(size, args.halo, args.steps)
            else:
                row = _in_process(way, size, args.halo, args.steps)
            row = {"size": size, "way": way, "halo": args.halo, **row}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"torch": torch.__version__, "cpus": os.cpu_count(), "rows": rows}, file, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
