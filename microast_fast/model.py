"""``MicroAST``: the drop-in fast module. Same submodules and state_dict keys as the reference;
its forward runs on the chosen backend (``microast_fast.dispatch``)."""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from . import color, dispatch, self_check, streaming
from . import cuda_graphs as cuda_graphs_module
from .backends import Backend, get_backend
from .checkpoint import PUBLISHED_ITERATION, StrictStateDictMixin, load_bundled, load_checkpoint_dir
from .reference import Decoder, Encoder, MicroASTReference, Modulator
from .signals import StyleSignals
from .validation import check_image, check_model_match, check_pair, check_size, normalize_alpha


class MicroAST(StrictStateDictMixin, nn.Module):
    """MicroAST style transfer with fused backends.

    ``forward(content [N,3,H,W], style [N or 1,3,h,w] | StyleSignals, alpha=1.0)`` returns
    ``[N, 3, 4*ceil(H/4), 4*ceil(W/4)]``, as the published model. ``alpha`` is a float or a tensor of N
    values in [0, 1]. ``backend`` is "auto", "torch", "triton" or "cuda"; ``active_backend`` says what
    runs on the model's current device. ``preserve_color`` keeps the content's colours (``color``):
    "coral" recolours the style image to the content's colour mean and covariance before it is encoded,
    "luminance" keeps the output's luminance and the content's chroma (YCbCr, BT.601).
    ``cuda_graphs=True`` (CUDA devices, inference) replays repeated forwards of one shape from CUDA
    graphs (``cuda_graphs``): for video frames with cached ``StyleSignals``.
    """

    def __init__(self, backend: str = "auto", max_memory=None, tile_size: int | None = None,
                 preserve_color: str | None = None, cuda_graphs: bool = False):
        super().__init__()
        self.content_encoder = Encoder()
        self.style_encoder = Encoder()
        self.modulator = Modulator()
        self.decoder = Decoder()
        self.backend = dispatch.check_backend_name(backend)
        self.max_memory = None if max_memory is None else streaming.parse_bytes(max_memory)
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 0):
            raise ValueError(
                f"tile_size is a tile side in quarter-resolution pixels (a positive int, or 0 for whole-image "
                f"execution), got {tile_size!r}"
            )
        self.tile_size = tile_size
        color.check_preserve_color(preserve_color)
        self.preserve_color = preserve_color
        if cuda_graphs and (max_memory is not None or tile_size):
            raise ValueError("cuda_graphs replays whole-image forwards; it does not combine with max_memory or "
                             "tile_size (streaming)")
        self.cuda_graphs = bool(cuda_graphs)
        self._graphed = cuda_graphs_module.GraphedForward()
        self._warned_autograd = False
        self._choices: dict = {}  # _choice's answers: the same on every forward of one shape

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, backend: str = "auto", device=None, dtype=None, **options) -> "MicroAST":
        """The published weights bundled with the package (offline), for inference: eval mode, frozen.
        ``options``: ``max_memory``, ``tile_size``, ``preserve_color``, ``cuda_graphs`` (see the class)."""
        model = cls(backend, **options)
        load_bundled(model)
        return model._ready(device, dtype)

    @classmethod
    def from_official(cls, directory: str | os.PathLike, iteration: int = PUBLISHED_ITERATION,
                      backend: str = "auto", device=None, dtype=None) -> "MicroAST":
        """The four published files (``<module>_iter_<iteration>.pth.tar``) from ``directory``."""
        model = cls(backend)
        load_checkpoint_dir(model, directory, iteration)
        return model._ready(device, dtype)

    @classmethod
    def from_reference(cls, reference: MicroASTReference, backend: str = "auto") -> "MicroAST":
        """A fast module with the reference's weights, device, dtype and train/eval mode."""
        param = next(reference.parameters())
        model = cls(backend).to(device=param.device, dtype=param.dtype)
        model.load_state_dict(reference.state_dict())
        model.train(reference.training)
        model.requires_grad_(param.requires_grad)
        model.active_backend  # fail now, not at the first forward, if the backend cannot run here
        return model

    def _ready(self, device, dtype) -> "MicroAST":
        self.eval().requires_grad_(False)
        self.to(device=device, dtype=dtype)
        self.active_backend
        return self

    # --- device, dtype, backend -----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights are, and so where inputs must be."""
        return self._param.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype, and so the inputs' and the maps'."""
        return self._param.dtype

    @property
    def _param(self) -> torch.Tensor:
        return self.content_encoder.enc1[0].conv_layer.weight

    @property
    def active_backend(self) -> str:
        """The name of the backend that runs on this model's device (``backend_choice`` says why)."""
        return self.backend_choice.backend

    @property
    def backend_choice(self) -> dispatch.Choice:
        """The backend that runs on this model's device, and why (raises if a backend asked for by name
        cannot run). For "auto" on a GPU the choice also depends on the content's size: this is the
        choice for large images."""
        return self._choice(None)

    def _choice(self, pixels: int | None) -> dispatch.Choice:
        if torch.compiler.is_compiling():
            return self._choose(pixels)  # no Python-side cache for dynamo to guard on
        key = (self.backend, self.device, self.dtype, pixels)
        choice = self._choices.get(key)
        if choice is None:
            choice = self._choices[key] = self._choose(pixels)
        return choice

    def _choose(self, pixels: int | None) -> dispatch.Choice:
        choice = dispatch.choose(self.backend, self.device, self.dtype, pixels)
        if not choice.needs_self_check:
            return choice
        failure = self_check.verdict(self.device, choice.backend, self.dtype, lambda: self._self_check(choice.backend))
        if failure is None:
            return dispatch.Choice(choice.backend, f"{choice.why}; passed its self-check here")
        return dispatch.Choice(dispatch.FALLBACK, f"{choice.backend!r} ({choice.why}) failed its self-check: {failure}")

    def _self_check(self, backend: str) -> str | None:
        """``self_check.run`` of ``backend`` in this model's dtype, on the bundled weights."""
        candidate = type(self).from_pretrained(backend=backend, device=self.device, dtype=self.dtype, tile_size=0)
        reference = type(self).from_pretrained(backend=dispatch.FALLBACK, device=self.device, dtype=torch.float32,
                                               tile_size=0)
        return self_check.run(candidate, reference)

    def _records_grad(self, *tensors) -> bool:
        return torch.is_grad_enabled() and (
            any(t.requires_grad for t in tensors) or any(p.requires_grad for p in self.parameters())
        )

    def _backend_for(self, records_grad: bool, pixels: int | None = None) -> Backend:
        name = self._choice(pixels).backend
        if records_grad and name != "torch":
            if not self._warned_autograd:
                warnings.warn(
                    f"backend {name!r} runs inference only; autograd is recording (grad enabled and an input or "
                    "parameter requires grad), so this call runs the differentiable 'torch' path. Use "
                    "torch.inference_mode() or model.requires_grad_(False) for the fused kernels.",
                    stacklevel=3,
                )
                self._warned_autograd = True
            name = dispatch.FALLBACK
        return get_backend(name)

    # --- inference ----------------------------------------------------------------------------
    def encode_style(self, style: torch.Tensor, content: torch.Tensor | None = None) -> StyleSignals:
        """FeatMod statistics and FilterMod signals of ``style`` ``[S, 3, h, w]``, reusable across calls.
        With ``preserve_color="coral"`` the style is first recoloured to ``content``'s colours (required;
        for a video, e.g. its first frame, so that the colours hold still)."""
        check_image("style", style)
        check_model_match("style", style, self._param)
        if self.preserve_color == "coral":
            if content is None:
                raise ValueError("preserve_color='coral' matches the style's colours to a content's: pass "
                                 "encode_style(style, content=...) (for a video, e.g. its first frame)")
            style = color.coral(style, content)
        return self._backend_for(self._records_grad(style)).encode_style(self, style)

    def forward(self, content: torch.Tensor, style, alpha=1.0) -> torch.Tensor:
        check_image("content", content)
        check_model_match("content", content, self._param)
        if isinstance(style, StyleSignals):
            style_tensors = tuple(style)
        else:
            check_image("style", style)
            check_model_match("style", style, self._param)
            style_tensors = (style,)
        check_pair(content, style)
        alpha = normalize_alpha(alpha, content.shape[0], content.device)
        records_grad = self._records_grad(content, *style_tensors)
        n, _, h, w = content.shape
        backend = self._backend_for(records_grad, n * h * w)
        plan = self.streaming_plan(n, h, w)  # first: a budget that cannot fit fails before any work
        if plan is not None and records_grad:
            if self._streams_by_default:
                plan = None  # the plain differentiable graph
            else:
                raise ValueError(
                    "tiled streaming (max_memory / tile_size) runs inference only, but autograd is recording; "
                    "use torch.inference_mode() or model.requires_grad_(False), or tile_size=0 for whole-image"
                )
        if isinstance(style, StyleSignals):
            signals = style  # with preserve_color="coral", encode_style(style, content=...) recoloured it
        else:
            signals = backend.encode_style(self, color.coral(style, content) if self.preserve_color == "coral"
                                           else style)
        if self.cuda_graphs:
            if content.device.type != "cuda":
                raise ValueError(f"cuda_graphs=True replays CUDA graphs, but the model is on {content.device}; "
                                 "use cuda_graphs=False there")
            if plan is not None or records_grad:
                raise ValueError("cuda_graphs=True runs whole-image inference: use torch.inference_mode() and "
                                 "neither max_memory nor tile_size")
            out = self._graphed(self, backend, content, signals, alpha)
        elif plan is None:
            out = backend.stylize(self, content, signals, alpha)
        else:
            out = streaming.stylize(backend.tile_stages(self), content, signals, alpha, plan)
        return color.preserve_luminance(out, content) if self.preserve_color == "luminance" else out

    @property
    def _streams_by_default(self) -> bool:
        return self.tile_size is None and self.max_memory is None

    def streaming_plan(self, batch: int, height: int, width: int, io_bytes: int | None = None) -> streaming.Plan | None:
        """How ``forward`` streams a ``batch x 3 x height x width`` content (``streaming.Plan``), or None
        for whole-image execution.

        ``tile_size`` sets the tile (0: whole image). ``max_memory`` (bytes or "2GB") picks the fastest
        plan whose memory fits the budget with ``io_bytes`` for input and output (default: the tensors
        of ``forward``), and raises ValueError, before any work, when none fits. With neither, CPU
        inference on the torch backend streams in cache-sized tiles: exact, and faster than whole-image
        (see ``streaming.CPU_TILE``); other devices run whole-image.
        """
        device = self.device
        h4, w4 = -(-height // 4), -(-width // 4)
        if self.tile_size == 0:
            return None
        if self.tile_size is not None:
            return streaming.Plan(self.tile_size)
        if self.max_memory is not None:
            max_tile = streaming.CPU_TILE if device.type == "cpu" else None  # larger is no faster on CPU
            return streaming.plan_for_budget(batch, height, width, self.dtype.itemsize, self.max_memory,
                                             io_bytes, max_tile)
        if device.type == "cpu" and self.active_backend == "torch" and max(h4, w4) > streaming.CPU_TILE:
            return streaming.Plan(streaming.CPU_TILE)
        return None

    def stream(self, read, height: int, width: int, signals: StyleSignals, alpha=1.0, batch: int = 1,
               plan: streaming.Plan | None = None, progress=None):
        """Stylise a ``batch x 3 x height x width`` content read region by region, ``read(y0, y1, x0, x1) ->
        [batch, 3, y1 - y0, x1 - x0]`` on the model's device and dtype, in tiles (``plan``: default
        ``streaming_plan``, else tiles of ``streaming.CPU_TILE``), for inference. Yields the output band
        by band, top to bottom, as ``(first row, [batch, 3, rows, 4 * ceil(width / 4)])``, so that neither
        the input nor the output need ever exist whole. ``progress(k)`` counts tiles
        (``streaming.tile_count`` in all)."""
        check_size("content", height, width)
        alpha = normalize_alpha(alpha, batch, self.device)
        if plan is None:
            plan = self.streaming_plan(batch, height, width) or streaming.Plan(streaming.CPU_TILE)
        stages = self._backend_for(records_grad=False, pixels=batch * height * width).tile_stages(self)
        bands = streaming.stream(stages, read, (height, width), batch, signals, alpha, plan, progress)
        if self.preserve_color != "luminance":
            return bands
        # The content's rows of each band (the last row repeated past the image, as preserve_luminance pads).
        return ((y0, color.preserve_luminance(band, read(min(y0, height - 1), min(y0 + band.shape[2], height),
                                                          0, width)))
                for y0, band in bands)


def load_official(directory: str | os.PathLike, iteration: int = PUBLISHED_ITERATION,
                  backend: str = "auto", device=None, dtype=None) -> MicroAST:
    """``MicroAST`` from a folder holding the published four-file release."""
    return MicroAST.from_official(directory, iteration, backend=backend, device=device, dtype=dtype)
