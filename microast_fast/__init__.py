"""microast-fast: fused kernels for MicroAST arbitrary style transfer behind a drop-in module."""

from .checkpoint import CheckpointError
from .dispatch import BACKENDS, BackendUnavailableError, backend_report
from .model import MicroAST, load_official
from .reference import MicroASTReference
from .signals import StyleSignals

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "CheckpointError",
    "MicroAST",
    "MicroASTReference",
    "StyleSignals",
    "backend_report",
    "load_official",
]
