"""Kernel operands packed from a model's parameters once, and again only when the parameters change.

The fused backends repack the model's weights into their kernels' layouts (taps first, map dtype,
padded operands). Packing is a few dozen small copies: per forward that is launch overhead a 4K
forward on a GPU would feel, so each backend keeps one packing per model, keyed on what would make
it stale: a parameter replaced, moved, cast or updated in place (its version counter).
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch


class OperandCache:
    """``cache.get(model)``: ``pack(model)``'s result, recomputed only when a parameter changed."""

    def __init__(self, pack: Callable[[torch.nn.Module], object]):
        self._pack = pack
        self._entries: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()

    def get(self, model: torch.nn.Module):
        if torch.compiler.is_compiling():
            return self._pack(model)  # traced once into the graph; no Python cache to guard on
        params = list(model.parameters())
        if any(p.is_inference() for p in params):
            # Parameters made under torch.inference_mode() have no version counter to key the cache on
            # (they can still be updated in place there): pack per call.
            with torch.no_grad():
                return self._pack(model)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        hit = self._entries.get(model)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, self._pack(model))
            self._entries[model] = hit
        return hit[1]
