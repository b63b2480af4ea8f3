"""One fit step captured as a CUDA graph and replayed, instead of launched op by op.

On an H200 a step of the paper network cost about the same at 256² and 512² (12 and 15 ms
in a plain loop, 2026-11-26, BENCHMARKS.md "One step on a GPU"): the time goes to
launching thousands of small kernels from Python, not to arithmetic. A CUDA graph records
a step's kernels (forward, loss, backward and the Adam update) once and replays them with
one launch. Unlike ``torch.compile``'s ``reduce-overhead`` mode, which took most of a
minute to compile there, capturing compiles nothing: it records one step.

A graph reads and writes fixed addresses, so the step it replays must take its input from
one tensor that the caller refills in place (the jittered network input) and hands back
the same output and loss tensors every time. The optimiser must be made with
``capturable=True`` (its step count lives on the device). What stays outside the graph:
drawing the input jitter (so the random stream is the one an eager fit uses), the running
average, the stopping rule and the host-side checks.

A backtrack loads saved optimiser state (new tensors) and halves the learning rate (a
value the graph baked in): the caller calls :meth:`GraphedStep.reset`, and the next call
captures again.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

#: Eager steps before the first capture: they allocate the optimiser's state and let cuDNN
#: pick its kernels (autotuning cannot run inside a capture).
WARMUP_STEPS = 3


class GraphedStep:
    """Calls ``step`` (no arguments; returns a tuple of tensors) eagerly for the first
    ``warmup`` calls, then captures it once and replays the capture on every later call.

    The tensors returned after capture are the graph's own: each call overwrites them,
    so a caller that keeps a value past the next call copies it. A capture that fails
    (an operation CUDA graphs cannot hold) warns and leaves the step eager for good;
    :attr:`failure` says why.
    """

    def __init__(self, step: Callable[[], tuple], device: torch.device | None = None, warmup: int = WARMUP_STEPS):
        self._step = step
        #: The CUDA device the step runs on: streams and captures belong to a device, and
        #: the current one may be another (``device="cuda:1"``).
        self.device = device
        self.warmup = warmup
        self._eager_calls = 0
        self._graph = None
        self._results: tuple | None = None
        #: Captures so far (a backtrack makes one more).
        self.captures = 0
        #: Why capturing failed (the step then runs eagerly), or ``None``.
        self.failure: str | None = None

    @property
    def graphed(self) -> bool:
        """True once a capture is being replayed."""
        return self._graph is not None

    def __call__(self) -> tuple:
        if self._graph is not None:
            self._replay(self._graph)
            return self._results
        if self.failure is not None:
            return self._step()  # no capture will follow: no side stream either
        if self._eager_calls < self.warmup:
            self._eager_calls += 1
            return self._run_eagerly()
        try:
            self._graph, self._results = self._capture()
        except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager steps
            self.failure = f"{type(error).__name__}: {error}"
            warnings.warn(f"CUDA graph capture failed, the fit goes on without graphs ({self.failure})",
                          RuntimeWarning, stacklevel=2)
            self._graph = self._results = None
            return self._step()
        self.captures += 1
        # Capturing records the kernels without running them: run this step now.
        self._replay(self._graph)
        return self._results

    def reset(self) -> None:
        """Forget the capture (the optimiser's state or learning rate changed): the next
        call captures again, without further warm-up."""
        self._graph = None
        self._results = None

    # -- what touches CUDA; a test replaces these -------------------------------------------

    def _run_eagerly(self) -> tuple:
        if not torch.cuda.is_available():
            return self._step()
        with torch.cuda.device(self.device):
            # As PyTorch's documentation asks, warm-up runs on a side stream, so that nothing
            # it lazily sets up belongs to the stream the capture runs on.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                results = self._step()
            torch.cuda.current_stream().wait_stream(side)
        return results

    def _capture(self):
        with torch.cuda.device(self.device):
            graph = torch.cuda.CUDAGraph()
            # thread_local: CUDA calls of other threads (a GUI, another fit) cannot spoil it.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                results = self._step()
        return graph, results

    def _replay(self, graph) -> None:
        with torch.cuda.device(self.device):
            graph.replay()


def graphs_wanted(config, device: torch.device) -> bool:
    """Whether a fit with ``config`` on ``device`` graphs its steps: on a CUDA device unless
    ``cuda_graphs`` is False, and not in float16, whose gradient scaler reads the gradients
    on the host at every step."""
    return config.cuda_graphs is not False and device.type == "cuda" and config.precision != "float16"
