"""Repeated forwards replayed from CUDA graphs: ``MicroAST(cuda_graphs=True)``.

A forward of the fused backends is a few dozen kernel launches, each with its Python and driver cost;
at 1080p that fixed cost is a large share of the call. For a stream of frames of one shape with
cached ``StyleSignals`` (video), the forward is captured once as a CUDA graph per (backend, shape,
dtype, style batch, alpha form) and replayed: one launch a call. Inputs are copied into the graph's
own tensors on every call, so a new frame, style or alpha takes effect at once, and the output is
returned as a new tensor (the graph's own is overwritten by the next replay). The call path has no
host synchronisation: alpha given as a float is written to the device, never read back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .signals import StyleSignals

# Captured graphs kept per model: each holds its intermediate maps (a 4K fp16 forward: a few hundred MB).
MAX_GRAPHS = 4


@dataclass
class _Captured:
    replay: object  # runs the captured forward
    content: torch.Tensor
    signals: StyleSignals
    alpha: torch.Tensor
    out: torch.Tensor
    weights: object  # the packed weights the captured kernels read: held, so that they stay alive


class GraphedForward:
    """Replays ``backend.stylize(model, content, signals, alpha)`` from CUDA graphs, one per input form."""

    def __init__(self):
        self._graphs: dict[tuple, _Captured] = {}
        self._pool = None  # one memory pool shared by this model's graphs (they never run concurrently)

    def __call__(self, model, backend, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
        # A graph reads the weights where they were at its capture: the kernel backends' packed copies
        # (a new object whenever a parameter changes; held by the entry, so the id is not reused), the
        # torch backend's parameters themselves.
        if hasattr(backend, "operands"):
            weights = backend.operands(model)
            weights_key = id(weights)
        else:
            weights, weights_key = None, tuple(p.data_ptr() for p in model.parameters())
        alpha_len = 1 if not torch.is_tensor(alpha) else alpha.numel()
        key = (backend.name, tuple(content.shape), content.dtype, content.device, signals.batch_size,
               tuple(t.dtype for t in signals), alpha_len, weights_key)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(model, backend, content, signals, alpha_len, weights)
            while len(self._graphs) >= MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))  # the oldest
            self._graphs[key] = entry
        entry.content.copy_(content)
        if torch.is_tensor(alpha):
            entry.alpha.copy_(alpha.reshape(entry.alpha.shape))
        else:
            entry.alpha.fill_(alpha)
        # Every call: signals made under inference_mode have no version counter to tell an in-place
        # change by, and eight small copies are one multi-tensor launch.
        torch._foreach_copy_(list(entry.signals), list(signals))
        entry.replay()
        return entry.out.clone()

    def _capture(self, model, backend, content, signals, alpha_len, weights) -> _Captured:
        static_content = content.clone()
        static_signals = StyleSignals(*(t.clone() for t in signals))
        static_alpha = torch.ones(alpha_len, 1, 1, 1, device=content.device, dtype=torch.float32)

        def forward():
            return backend.stylize(model, static_content, static_signals, static_alpha)

        try:
            replay, out = self.record(forward, content.device)
        except RuntimeError as exc:
            raise RuntimeError(f"backend {backend.name!r} cannot be captured in a CUDA graph ({exc}); "
                               "use MicroAST(cuda_graphs=False)") from exc
        return _Captured(replay, static_content, static_signals, static_alpha, out, weights)

    def record(self, forward, device: torch.device):
        """``(replay, out)``: ``forward`` captured as a CUDA graph, and the tensor each replay writes."""
        # First calls outside the capture, on a side stream as torch requires: kernels compile and
        # autotune, lazy initialisation happens, and nothing of that may be recorded.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                forward()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._pool):
            out = forward()
        return graph.replay, out

    def __getstate__(self):
        return {"_graphs": {}, "_pool": None}  # graphs are of this process and device: a copy recaptures
