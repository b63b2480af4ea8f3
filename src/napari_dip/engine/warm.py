"""Paying a process's one-off start-up costs before the first fit needs them.

The first fit of a process waits for more than its own work: the first ``torch.optim``
optimiser imports ``torch._dynamo`` (about 1 s on a 2-core CPU, BENCHMARKS.md *The first
picture*), and on a CUDA GPU the context and the libraries start (the first picture of a
fresh process came 10.1 s after the call on an H200, a second fit's after 2.3 s; BENCHMARKS.md,
fifth lease). A widget has seconds to spare while its user picks layers and settings:
:func:`start_warm_up` spends them in a background thread, once per device and process.

The warm-up draws no random numbers: a fit seeds PyTorch's global generator before it
builds its network, and a thread drawing from it at the same time would change the result.
"""

from __future__ import annotations

import threading

import torch

_lock = threading.Lock()
#: The warm-up thread of each device (by name) started in this process.
_threads: dict[str, threading.Thread] = {}
#: Why a device's warm-up failed (the fit itself then reports the problem properly).
failures: dict[str, str] = {}
#: How long anything waits for a warm-up to end (a fit, a dock's device line) before it
#: goes on without it.
WAIT_SECONDS = 120.0


def warm_up(device: torch.device) -> None:
    """One tiny training step on ``device`` with the kinds of operation a fit's network
    uses (reflection padding, convolution, batch norm, leaky ReLU, bilinear upsampling, a
    squared error, an Adam step), so that what they load on first use is loaded."""
    import torch.nn.functional as F  # noqa: N812 - PyTorch's usual name

    # skip_init: no weight initialisation, which would draw from the global generator.
    conv = torch.nn.utils.skip_init(torch.nn.Conv2d, 3, 4, 3, device=device)
    norm = torch.nn.BatchNorm2d(4, device=device)  # initialised with ones and zeros
    with torch.no_grad():
        conv.weight.fill_(0.01)
        conv.bias.zero_()
    optimizer = torch.optim.Adam([*conv.parameters(), *norm.parameters()], lr=1e-3)
    image = torch.linspace(0, 1, 3 * 8 * 8, device=device).reshape(1, 3, 8, 8)
    features = F.leaky_relu(norm(conv(F.pad(image, (1, 1, 1, 1), mode="reflect"))), 0.2)
    output = F.interpolate(features, scale_factor=2, mode="bilinear", align_corners=False)
    F.mse_loss(output, torch.zeros_like(output)).backward()
    optimizer.step()
    # No device-wide synchronisation here: from another thread it could spoil the capture
    # of a fit's CUDA graph. Launching the kernels is what loads them.


def start_warm_up(device: torch.device) -> threading.Thread:
    """Run :func:`warm_up` for ``device`` in a background thread, unless this
    process already started one for it; returns that thread. A warm-up that fails says so
    in :data:`failures` only: the fit that follows meets the same problem and reports it.
    A fit on ``device`` waits for the warm-up to end (:func:`wait_for`), which costs it
    nothing, since it would pay the same start-up itself.

    >>> start_warm_up(torch.device("cpu")).join()
    """
    key = str(device)
    with _lock:
        thread = _threads.get(key)
        if thread is None:
            # Not a daemon: a process that ends while the warm-up is inside PyTorch aborts
            # (a command refusing a bad file at once exited with 134 instead of 2), so the
            # interpreter waits for it at exit: about a second on a CPU, on a GPU as long as
            # CUDA's start-up.
            thread = threading.Thread(target=_warm_up_quietly, args=(device, key), daemon=False,
                                      name=f"napari-dip warm-up ({key})")
            _threads[key] = thread
            thread.start()
    return thread


def state(device: torch.device) -> str | None:
    """Where the warm-up of ``device`` in this process stands: ``"running"``, ``"failed"``
    (:data:`failures` says why), ``"done"``, or ``None`` if none was started.

    >>> state(torch.device("meta")) is None
    True
    """
    key = str(device)
    with _lock:
        thread = _threads.get(key)
    if thread is None:
        return None
    if thread.is_alive():
        return "running"
    return "failed" if key in failures else "done"


def wait_for(device: torch.device, timeout: float | None = None) -> None:
    """Wait for the warm-up of ``device`` started in this process, if any, to end (at most
    ``timeout`` seconds, by default :data:`WAIT_SECONDS`). A fit calls this before it touches its device: running beside the
    warm-up would time cuDNN's kernels against it, and a capture of the fit's CUDA graph
    must not meet the warm-up's kernels."""
    with _lock:
        thread = _threads.get(str(device))
    if thread is not None and thread is not threading.current_thread():
        thread.join(WAIT_SECONDS if timeout is None else timeout)


def _warm_up_quietly(device: torch.device, key: str) -> None:
    try:
        warm_up(device)
    except Exception as error:  # noqa: BLE001 - a failed warm-up must not surface on its own thread
        failures[key] = f"{type(error).__name__}: {error}"
