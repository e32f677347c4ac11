"""Image files <-> tensors with Pillow, and output files that are never half-written."""

from __future__ import annotations

import contextlib
import glob
import os
import stat
import tempfile
import zlib
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def asset_path(name: str) -> Path:
    """A bundled example image (``microast_fast/data/assets``)."""
    return Path(str(resources.files("microast_fast") / "data" / "assets" / name))


def load_image(path: str | os.PathLike, short_side: int | None = None) -> torch.Tensor:
    """``[1, 3, H, W]`` float32 in [0, 1]: EXIF orientation applied; grayscale, 16-bit, RGBA and palette
    images made RGB (alpha dropped: MicroAST has no notion of it); optionally resized so that the
    shorter side is ``short_side``."""
    return pixels_to_tensor(read_pixels(path, short_side))


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 (or float32 in [0, 1]) -> ``[1, 3, H, W]`` float32 in [0, 1], with
    channels-last strides (the layout the CPU convolutions want)."""
    tensor = torch.from_numpy(np.array(pixels, order="C")).permute(2, 0, 1).unsqueeze(0)
    return tensor.float().div_(255) if tensor.dtype == torch.uint8 else tensor


def image_size(path: str | os.PathLike, short_side: int | None = None) -> tuple[int, int]:
    """``(H, W)`` that ``read_pixels`` will return, from the file's header alone (no decoding)."""
    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):  # a quarter turn
            w, h = h, w
    if short_side:
        w, h = resized(w, h, short_side)
    return h, w


def read_pixels(path: str | os.PathLike, short_side: int | None = None) -> np.ndarray:
    """``[H, W, 3]``: uint8 for 8-bit images, float32 in [0, 1] for high bit depth (4x smaller than a
    float tensor, so a 16K input stays at 425 MB). Conversions as in ``load_image``."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):
            # High bit depth: keep its precision, scale from the mode's own range instead of clipping to 8 bits.
            scale = 1.0 if img.mode == "F" else 65535.0
            img = img if img.mode == "F" else img.convert("I").convert("F")
        else:
            img = img.convert("RGB")
        if short_side:
            img = img.resize(resized(*img.size, short_side), Image.Resampling.LANCZOS)
        if img.mode == "RGB":
            return np.asarray(img)
        array = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)
    return np.repeat(array[..., None], 3, axis=2)


def resized(w: int, h: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` -> ``[H, W, 3]`` uint8 as the published script saves: ``x * 255 + 0.5``, clamped, truncated."""
    return image.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# Formats written band by band as the rows are computed: the whole output never sits in memory.
STREAMED_SUFFIXES = {".png", ".tif", ".tiff"}
_TIFF_ROWS_PER_STRIP = 64


def image_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {str(path)!r} from its suffix; use .png, .jpg, .tif, ...")
    return fmt


PARTIAL_SUFFIX = ".partial"


def partial_files(path: Path) -> list[Path]:
    """The temporary files ``atomic_file`` writes for ``path``: hidden, beside it."""
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*{PARTIAL_SUFFIX}"))


def remove_leftovers(paths) -> int:
    """Remove the temporary files of these outputs that a killed run (SIGKILL, power loss) left behind;
    how many."""
    removed = 0
    for path in paths:
        for leftover in partial_files(Path(path)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
    return removed


def _new_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: an existing file's own, else 0o666 less the umask
    (mkstemp's 0o600 would keep web servers and other users out)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_file(path: Path):
    """A file object for ``path``, written as a temporary file in the same folder and renamed into place
    on success; on any error the temporary file is removed: readers never see a partial image."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            yield f
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_image_atomic(array: np.ndarray | Image.Image, path: str | os.PathLike) -> None:
    """Save a whole image (Pillow) through ``atomic_file``."""
    path = Path(path)
    img = array if isinstance(array, Image.Image) else Image.fromarray(array)
    fmt = image_format(path)
    with atomic_file(path) as f:
        pillow_save(img, f, fmt)


def pillow_save(img: Image.Image, f, fmt: str) -> None:
    img.save(f, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def save_bands_atomic(bands: Iterator[np.ndarray], height: int, width: int, path: str | os.PathLike) -> None:
    """Save an RGB image given as bands of rows (``[k, width, 3]`` uint8, top to bottom, ``height`` rows
    in all) through ``atomic_file``. PNG (pypng) and TIFF (tifffile, zlib strips) are encoded band by
    band as the bands arrive; other formats gather the image and save it with Pillow."""
    # Imported here, by the one function that writes with them: reading images needs only Pillow
    # (a machine installed with --no-deps, such as the GPU machine, may lack them).
    import png
    import tifffile

    path = Path(path)
    fmt = image_format(path)
    with atomic_file(path) as f:
        if fmt == "PNG":
            rows = (row.reshape(-1) for band in bands for row in band)
            png.Writer(width, height, greyscale=False, bitdepth=8).write(f, rows)
        elif fmt == "TIFF":
            strips = (zlib.compress(strip.tobytes()) for strip in rebuffer(bands, _TIFF_ROWS_PER_STRIP))
            tifffile.imwrite(f, data=strips, shape=(height, width, 3), dtype=np.uint8, photometric="rgb",
                             compression="zlib", rowsperstrip=_TIFF_ROWS_PER_STRIP)
        else:
            image = np.concatenate(list(bands))
            if image.shape != (height, width, 3):
                raise ValueError(f"got a {image.shape} image, expected {(height, width, 3)}")
            pillow_save(Image.fromarray(image), f, fmt)


def rebuffer(bands: Iterator[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Bands of any heights -> bands of exactly ``rows`` rows (the last one shorter)."""
    pending = np.empty((0,), np.uint8)
    for band in bands:
        pending = np.concatenate([pending, band]) if len(pending) else band
        while len(pending) >= rows:
            yield pending[:rows]
            pending = pending[rows:]
    if len(pending):
        yield pending
