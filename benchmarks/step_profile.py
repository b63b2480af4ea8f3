"""Where one step of a network's fit spends its time, operation by operation, on a device.

    PYTHONPATH=src python3 benchmarks/step_profile.py --device cuda --size 512 --out step-profile.json

The paper network's step on an H200 cost about 14 ms at 512² however it was issued
(eager or one CUDA graph, float32 or bf16; BENCHMARKS.md, *Step variants on a GPU*), far
more than its convolutions' arithmetic needs there, and no profile had been taken. This
runs the plain loop of a fit (the network, the squared error, backward, Adam) eagerly for
``--warmup`` steps, then ``--steps`` steps under ``torch.profiler``, and lists the
operations by their own time on the device (on the CPU, by their own CPU time): kernels
of the forward and the backward passes, the optimiser's, copies (on CUDA the kernels, with
cuDNN's kernel search on as the engine has it). ``--out`` keeps every operation's calls and
milliseconds per step as JSON; ``--summarise JSON`` adds up such a file's operations by kind
(convolutions, batch normalisation, padding, ...).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def profile_step(device: str, size: int, preset: str, channels: int, warmup: int, steps: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from napari_dip.engine.networks import NETWORK_PRESETS, SkipNet

    config = NETWORK_PRESETS[preset]["default"]
    torch.manual_seed(0)
    network = SkipNet(config, channels).to(device)
    noise = torch.rand(1, config.input_channels, size, size, device=device) * 0.1
    target = torch.rand(1, channels, size, size, device=device)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    cuda = device.startswith("cuda")
    if cuda:  # as the engine fits on CUDA (devices.autotune_convolutions): the same kernels
        torch.backends.cudnn.benchmark = True

    def step():
        loss = ((network(noise) - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    flops = convolution_gflop(network, noise)
    for _ in range(warmup):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    unprofiled = (time.perf_counter() - started) / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    rows = []
    for event in prof.key_averages():
        # On CUDA the kernels are events of their own (device type CUDA); the operators that
        # launched them would count the same time again, so only kernels are listed.
        kernel = str(event.device_type).endswith("CUDA")
        if cuda and not kernel:
            continue
        own = event.self_device_time_total if cuda else event.self_cpu_time_total
        rows.append({"name": event.key, "calls_per_step": event.count / steps, "self_ms_per_step": own / 1000 / steps})
    rows.sort(key=lambda row: -row["self_ms_per_step"])
    return {"device": device, "device_name": torch.cuda.get_device_name(0) if cuda else platform.machine() + " CPU",
            "torch": torch.__version__, "size": size, "preset": preset, "channels": channels,
            "cudnn_benchmark": bool(cuda and torch.backends.cudnn.benchmark),
            "convolution_gflop_forward": flops,
            "ms_per_step_unprofiled": 1000 * unprofiled,
            "profiled_total_ms_per_step": sum(r["self_ms_per_step"] for r in rows), "operations": rows}


#: Kinds of operation, by what their kernel names contain, in the order tried (the first
#: match wins): ``--summarise`` adds up each kind's milliseconds.
KINDS = (
    ("convolution", ("xmma", "cutlass", "gemm", "conv", "winograd", "wgrad", "dgrad", "splitKreduce",
                     "scalePackedTensor")),
    ("batch normalisation", ("bn_", "batch_norm")),
    ("layout conversion (NCHW <-> NHWC)", ("nchwToNhwc", "nhwcToNchw")),
    ("reflection padding", ("reflection_pad",)),
    ("upsampling", ("upsample",)),
    ("activation", ("leaky", "sigmoid")),
    ("Adam's annotated range", ("Optimizer.",)),
    ("Adam's kernels", ("multi_tensor_apply", "_fused_adam")),
    ("additions, reductions, fills", ("add", "reduce", "Fill", "sum")),
)


def summarise(operations: list[dict]) -> dict[str, float]:
    """Milliseconds per step of each kind of operation (:data:`KINDS`; the rest: ``other``)."""
    totals = {kind: 0.0 for kind, _ in KINDS} | {"other": 0.0}
    for row in operations:
        kind = next((kind for kind, marks in KINDS if any(mark in row["name"] for mark in marks)), "other")
        totals[kind] += row["self_ms_per_step"]
    return totals


def convolution_gflop(network, x) -> float:
    """The multiply-adds of the network's convolutions in one forward pass on ``x``, as
    GFLOP (two per multiply-add; the backward pass does about twice as many)."""
    import torch

    total = 0

    def count(module, inputs, output):
        nonlocal total
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        total += 2 * output.numel() * per_output

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            network(x)
    finally:
        for hook in hooks:
            hook.remove()
    return total / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (what it is for), or cpu to check the script")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--preset", default="paper", help="the network preset (paper, fast)")
    parser.add_argument("--channels", type=int, default=3, help="image channels (3: RGB)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=25, help="operations to print")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summarise", type=Path, metavar="JSON",
                        help="only add up the operations of an earlier --out file by kind (no device needed)")
    args = parser.parse_args(argv)
    if args.summarise:
        earlier = json.loads(args.summarise.read_text())
        print(f"{earlier['device_name']}, {earlier['size']}², {earlier['ms_per_step_unprofiled']:.2f} ms a step "
              f"unprofiled; own time per step by kind:")
        for kind, ms in summarise(earlier["operations"]).items():
            print(f"  {ms:8.3f} ms  {kind}")
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    result = profile_step(args.device, args.size, args.preset, args.channels, args.warmup, args.steps)
    unit = "device" if args.device.startswith("cuda") else "CPU"
    print(f"{result['device_name']}, torch {result['torch']}, {args.preset} network, {args.size}², "
          f"{result['ms_per_step_unprofiled']:.2f} ms a step unprofiled, "
          f"{result['convolution_gflop_forward']:.1f} GFLOP of convolutions forward; own {unit} time per step:")
    for row in result["operations"][: args.top]:
        print(f"  {row['self_ms_per_step']:8.3f} ms  {row['calls_per_step']:6.1f} calls  {row['name'][:90]}")
    if args.out:
        given = sys.argv[1:] if argv is None else list(argv)
        args.out.write_text(json.dumps({"date": date.today().isoformat(),
                                        "command": " ".join(["python benchmarks/step_profile.py", *given]),
                                        **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
