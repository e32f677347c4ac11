"""The interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..signals import StyleSignals
from ..streaming import TileStages


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


class Backend(ABC):
    """One way to run MicroAST's forward pass on the weights of a ``MicroAST`` module.

    Backends hold no per-model state: what they derive from a model's weights (packed kernel operands)
    is cached per model and rebuilt when a parameter changes (``operand_cache``). Every method that
    computes takes the model, its inputs already validated (``MicroAST.forward``).
    """

    name: str

    @abstractmethod
    def unavailable_reason(self, device: torch.device) -> str | None:
        """None when this backend can run on ``device``, else what is missing, in words a user can act on.
        Builds nothing; where it answers None, what the backend imports to compute is loaded."""

    @abstractmethod
    def encode_style(self, model, style: torch.Tensor) -> StyleSignals:
        """FeatMod statistics and FilterMod signals of ``style`` ``[S, 3, h, w]``."""

    @abstractmethod
    def stylize(self, model, content: torch.Tensor, signals: StyleSignals, alpha) -> torch.Tensor:
        """The whole-image forward of ``content`` ``[N, 3, H, W]``; ``alpha`` is a float or an fp32 (or
        float64) tensor ``[N or 1, 1, 1, 1]``; signals of batch 1 broadcast."""

    @abstractmethod
    def tile_stages(self, model) -> TileStages:
        """The content path as stages of the tiled executor (``streaming.stream``)."""

    def __repr__(self) -> str:
        return f"<backend {self.name!r}>"
