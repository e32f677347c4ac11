"""Image files <-> tensors with Pillow, and output files that are never half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def load_image(path: str | os.PathLike, short_side: int | None = None) -> torch.Tensor:
    """``[1, 3, H, W]`` float32 in [0, 1]: EXIF orientation applied; grayscale, 16-bit, RGBA and palette
    images made RGB (alpha dropped: MicroAST has no notion of it); optionally resized so that the
    shorter side is ``short_side``."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):
            # High bit depth: keep its precision, scale from the mode's own range instead of clipping to 8 bits.
            scale = 1.0 if img.mode == "F" else 65535.0
            img = img if img.mode == "F" else img.convert("I").convert("F")
        else:
            scale = 255.0
            img = img.convert("RGB")
        if short_side:
            img = resize_short_side(img, short_side)
        array = np.asarray(img, dtype=np.float32) / scale
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0)
    return tensor.clamp_(0.0, 1.0)


def resize_short_side(img: Image.Image, short_side: int) -> Image.Image:
    w, h = img.size
    scale = short_side / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` -> ``[H, W, 3]`` uint8 as the published script saves: ``x * 255 + 0.5``, clamped, truncated."""
    return image.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_image_atomic(array: np.ndarray | Image.Image, path: str | os.PathLike) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a partial file."""
    path = Path(path)
    img = array if isinstance(array, Image.Image) else Image.fromarray(array)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {str(path)!r} from its suffix; use .png, .jpg, .tif, ...")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
