"""Loading the published MicroAST checkpoints, with errors that say what is wrong with a file.

The release is four files, one ``state_dict`` per module. They ship inside the package
(``microast_fast/data/weights``, MIT licence beside them) so everything works offline.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Mapping

import torch

# The submodules of the published release (EndyWon/MicroAST, models/), one file each:
# ``<name>_iter_<iteration>.pth.tar``.
MODULE_NAMES = ("content_encoder", "style_encoder", "modulator", "decoder")
PUBLISHED_ITERATION = 160000


class CheckpointError(ValueError, RuntimeError):
    """A checkpoint that does not fit the model. A ValueError for users, a RuntimeError for code that
    catches what ``nn.Module.load_state_dict`` raises."""


def bundled_weights_dir() -> Path:
    return Path(str(resources.files("microast_fast") / "data" / "weights"))


def checkpoint_paths(directory: str | os.PathLike, iteration: int = PUBLISHED_ITERATION) -> dict[str, Path]:
    """The four published file names, ``<module>_iter_<iteration>.pth.tar``, inside ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist or is not a directory")
    paths = {name: directory / f"{name}_iter_{iteration}.pth.tar" for name in MODULE_NAMES}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir() if ".pth" in p.name)
        raise CheckpointError(
            f"{directory} lacks {', '.join(missing)}; it holds {present or 'no .pth files'}. "
            f"Pass iteration= to match the files you have, or download the four files of the release."
        )
    return paths


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)``, turning unreadable files into a CheckpointError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for bad files
        raise CheckpointError(
            f"could not read checkpoint {str(path)!r} ({type(err).__name__}: {err}). "
            "The file is truncated, corrupt or not a PyTorch state_dict; download it again."
        ) from err
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} is not a state_dict (a mapping of parameter names to tensors)")
    return dict(state)


def check_state_dict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a CheckpointError naming every missing key, unexpected key and shape mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if wrong_shape:
        problems.append(f"wrong shapes [{'; '.join(wrong_shape)}]")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: " + ", ".join(problems)
            + ". Is it the right file for this module, complete and from the published MicroAST release?"
        )


class StrictStateDictMixin:
    """``load_state_dict(strict=True)`` that reports every mismatch at once, as a CheckpointError."""

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if strict:
            check_state_dict(self, state_dict, "state_dict")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def load_checkpoint_dir(model: torch.nn.Module, directory: str | os.PathLike, iteration: int = PUBLISHED_ITERATION):
    """Load the four published files from ``directory`` into ``model``'s four submodules, unchanged."""
    for name, path in checkpoint_paths(directory, iteration).items():
        submodule = getattr(model, name)
        state = read_state_dict(path)
        check_state_dict(submodule, state, str(path))
        submodule.load_state_dict(state)
    return model


def load_bundled(model: torch.nn.Module):
    return load_checkpoint_dir(model, bundled_weights_dir())
