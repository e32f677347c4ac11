"""What ``stylize`` does, shared by the command line (one process) and ``distributed`` (Ray workers):
planning outputs from inputs, encoding styles once, and stylising one content image into its outputs.

Image I/O (.images: Pillow, pypng, tifffile) is imported by the functions that read or write images.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import streaming
from .signals import StyleSignals

# Content pixels one batched forward takes at most (``Stylizer.run_batched``): a 4K image's worth.
BATCH_PIXELS = 4096 * 2160

class UsageError(Exception):
    """A command line that cannot run as given; reported before any image is processed."""


@dataclass
class Job:
    content: Path
    styles: tuple[Path, ...]  # one style, or the styles that --mix mixes into one
    output: Path


def expand_inputs(paths: list[str], what: str) -> list[Path]:
    """Files as given; directories as their image files, sorted."""
    from .images import IMAGE_SUFFIXES

    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            found.append(p)
        else:
            raise UsageError(f"{what} {str(p)!r} does not exist")
    if not found:
        raise UsageError(f"no {what} images found in {paths}")
    return found


def plan_jobs(contents: list[Path], styles: list[Path], out: Path, ext: str, overwrite: bool,
              mix: list[float] | None = None) -> list[Job]:
    """One output per content and style, or per content with ``mix`` (all the styles mixed into one)."""
    from .images import IMAGE_SUFFIXES

    if mix is not None and len(mix) != len(styles):
        raise UsageError(f"--mix gives {len(mix)} weights for {len(styles)} styles ({', '.join(map(str, styles))}); "
                         "give one weight per style, in order")
    style_sets = [tuple(styles)] if mix is not None else [(s,) for s in styles]
    pairs = [(c, s) for c in contents for s in style_sets]
    if out.suffix.lower() in IMAGE_SUFFIXES:
        if len(pairs) > 1:
            raise UsageError(f"-o {out} names one file but there are {len(pairs)} outputs; give a directory")
        jobs = [Job(*pairs[0], out)]
    else:
        names = [out / f"{c.stem}_stylized_{'+'.join(p.stem for p in s)}.{ext.lstrip('.')}" for c, s in pairs]
        if len(set(names)) < len(names):
            raise UsageError("two inputs share a file name stem, so their outputs would collide; rename one")
        jobs = [Job(c, s, name) for (c, s), name in zip(pairs, names)]
    inputs = {p.resolve() for p in contents + styles}
    for job in jobs:
        if job.output.resolve() in inputs:
            raise UsageError(f"output {job.output} is one of the inputs; it is never overwritten. Choose another -o")
        if job.output.exists() and not overwrite:
            raise UsageError(f"output {job.output} exists; pass --overwrite to replace it")
    return jobs


def parse_mix(text: str | None) -> list[float] | None:
    from .signals import parse_weights

    return None if text is None else parse_weights(text)


def stylize_file(model, content: torch.Tensor, signals, alpha: float) -> torch.Tensor:
    """One content image through the model; the output is cropped to the content's size (the model pads
    sizes up to a multiple of 4, and those extra rows and columns are not part of the picture)."""
    h, w = content.shape[-2:]
    with torch.inference_mode():
        return model(content, signals, alpha)[0, :, :h, :w]


def io_bytes(h: int, w: int, output: Path) -> int:
    """Memory for a streamed job's input and output besides the model's plan: the decoded image (Pillow's
    4 bytes a pixel, then our 3) and, for formats not written band by band, the whole 8-bit output."""
    from .images import STREAMED_SUFFIXES

    return 7 * h * w * (1 if output.suffix.lower() in STREAMED_SUFFIXES else 2)


def plan_jobs_memory(model, jobs: list[Job], short_side: int | None) -> dict[Path, tuple]:
    """Size and streaming plan of each content image, from the file headers, before any work: a job the
    budget cannot hold stops the command here. Unreadable files are left for the job loop to report."""
    from .images import image_size

    plans = {}
    for job in jobs:
        if job.content in plans:  # one plan a content: every output of a run has the same format
            continue
        try:
            h, w = image_size(job.content, short_side)
        except (OSError, ValueError):
            continue
        try:
            plan = model.streaming_plan(1, h, w, io_bytes(h, w, job.output))
        except ValueError as err:
            raise UsageError(f"{job.content} ({w}x{h}) cannot be stylised within the budget: {err}") from None
        plans[job.content] = ((h, w), plan)
    return plans


def stream_file(model, pixels: np.ndarray, signals, alpha: float, plan, output: Path,
                progress_desc: str | None) -> None:
    """One content image through the tiled executor, written band by band to ``output``: the input stays
    8-bit, and PNG/TIFF outputs never exist whole in memory. A progress bar named ``progress_desc`` shows
    on long runs (none without one)."""
    from tqdm import tqdm

    from .images import pixels_to_tensor, save_bands_atomic, to_uint8

    h, w = pixels.shape[:2]

    def read(y0, y1, x0, x1):
        return pixels_to_tensor(pixels[y0:y1, x0:x1]).to(model.device, model.dtype)

    with tqdm(total=streaming.tile_count(h, w, plan.tile), desc=progress_desc, unit="tile", leave=False,
              delay=2.0, file=sys.stderr, disable=progress_desc is None) as bar, torch.inference_mode():
        bands = model.stream(read, h, w, signals, alpha, plan=plan, progress=bar.update)
        rows = (to_uint8(band[0, :, :h - y0, :w]) for y0, band in bands if y0 < h)
        save_bands_atomic(rows, h, w, output)


@dataclass
class Outcome:
    """What became of one job: ``seconds`` (stylising and writing) or ``error``."""
    job: Job
    width: int = 0
    height: int = 0
    seconds: float | None = None
    error: str | None = None


class StyleEncoder:
    """Style images -> signals for one model, for the image, video and Ray paths alike: each style image
    read once and encoded once (with ``preserve_color="coral"`` encoded anew for each content's
    ``colours``, which it is recoloured to); several styles make one mix (``StyleSignals.mix``)."""

    def __init__(self, model, style_size: int | None = 512, mix: list[float] | None = None):
        self.model, self.style_size, self.mix = model, style_size, mix
        self.images: dict[Path, torch.Tensor] = {}
        self.encoded: dict[Path, StyleSignals] = {}

    def image(self, path: Path) -> torch.Tensor:
        from .images import load_image

        if path not in self.images:
            self.images[path] = load_image(path, self.style_size or None).to(self.model.device, self.model.dtype)
        return self.images[path]

    def signals(self, styles: tuple[Path, ...], colours: torch.Tensor | None = None) -> StyleSignals:
        recolour = self.model.preserve_color == "coral"
        parts = []
        for path in styles:
            if recolour or path not in self.encoded:
                with torch.inference_mode():
                    signals = self.model.encode_style(self.image(path), content=colours)
                if recolour:
                    parts.append(signals)
                    continue
                self.encoded[path] = signals
            parts.append(self.encoded[path])
        return parts[0] if len(parts) == 1 else StyleSignals.mix(parts, self.mix)


class Stylizer:
    """Stylises content images into their jobs' outputs with one model: styles through a
    ``StyleEncoder`` (with ``preserve_color="coral"`` recoloured to each content), large images
    streamed within the model's memory budget."""

    def __init__(self, model, alpha: float = 1.0, size: int | None = None, style_size: int | None = 512,
                 mix: list[float] | None = None, show_tiles: bool = True):
        self.model, self.alpha, self.size = model, alpha, size
        self.show_tiles = show_tiles
        self.styles = StyleEncoder(model, style_size, mix)

    def signals(self, job: Job, pixels: np.ndarray) -> StyleSignals:
        from .images import pixels_to_tensor

        colours = None
        if self.model.preserve_color == "coral":
            step = max(1, int((pixels.shape[0] * pixels.shape[1] / 4e6) ** 0.5))  # colour statistics of <= 4 Mpx
            colours = pixels_to_tensor(pixels[::step, ::step])
        return self.styles.signals(job.styles, colours)

    def run(self, content_path: Path, jobs: list[Job], plan=None) -> Iterator[Outcome]:
        """Every job of one content image (``plan``: its streaming plan, as ``plan_jobs_memory`` gives),
        an ``Outcome`` each; errors of reading or writing are outcomes, not exceptions."""
        from .images import pixels_to_tensor, read_pixels, save_image_atomic, to_uint8

        model = self.model
        try:
            pixels = read_pixels(content_path, self.size)
            content = pixels_to_tensor(pixels).to(model.device, model.dtype) if plan is None else None
        except (OSError, ValueError) as err:
            for job in jobs:
                yield Outcome(job, error=f"cannot read it as an image ({err})")
            return
        h, w = pixels.shape[:2]
        for job in jobs:
            try:
                signals = self.signals(job, pixels)
                if model.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(model.device)
                    torch.cuda.synchronize(model.device)
                start = time.perf_counter()
                if plan is None:
                    save_image_atomic(to_uint8(stylize_file(model, content, signals, self.alpha)), job.output)
                else:
                    stream_file(model, pixels, signals, self.alpha, plan, job.output,
                                content_path.name if self.show_tiles else None)
                yield Outcome(job, w, h, seconds=time.perf_counter() - start)
            except (OSError, ValueError, TypeError) as err:
                yield Outcome(job, w, h, error=str(err))

    def run_batched(self, items: list[tuple[Path, list[Job], object]],
                    max_pixels: int = BATCH_PIXELS) -> Iterator[Outcome]:
        """Several content images, ``(path, jobs, plan)`` each: those of one size that run whole (no
        plan), with the same styles, go through the model together, in batches of at most ``max_pixels``;
        the others one by one (``run``). Outcomes as ``run`` gives them."""
        from .images import pixels_to_tensor, read_pixels

        groups: dict[tuple, list] = {}
        for content_path, jobs, plan in items:
            if plan is not None or self.model.preserve_color == "coral":  # coral: signals per content
                yield from self.run(content_path, jobs, plan)
                continue
            try:
                pixels = read_pixels(content_path, self.size)
            except (OSError, ValueError) as err:
                yield from (Outcome(job, error=f"cannot read it as an image ({err})") for job in jobs)
                continue
            groups.setdefault((pixels.shape, tuple(job.styles for job in jobs)), []).append((pixels, jobs))
        for (shape, style_sets), members in groups.items():
            per_batch = max(1, max_pixels // (shape[0] * shape[1]))
            for first in range(0, len(members), per_batch):
                batch = members[first:first + per_batch]
                # One image: the very tensor run() passes (the convolutions' sums, and so the last bit, depend
                # on the layout); several: channels-last, as pixels_to_tensor lays out each.
                content = pixels_to_tensor(batch[0][0]) if len(batch) == 1 else torch.cat(
                    [pixels_to_tensor(pixels) for pixels, _ in batch]).contiguous(memory_format=torch.channels_last)
                for k in range(len(style_sets)):
                    yield from self._stylize_batch(content.to(self.model.device, self.model.dtype), batch, k)

    def _stylize_batch(self, content: torch.Tensor, batch: list, k: int) -> Iterator[Outcome]:
        """The ``k``-th job of every image of ``batch`` (one size, one style set) in one forward."""
        from .images import save_image_atomic, to_uint8

        h, w = content.shape[-2:]
        start = time.perf_counter()
        try:
            signals = self.signals(batch[0][1][k], batch[0][0])
            with torch.inference_mode():
                out = self.model(content, signals, self.alpha)[:, :, :h, :w]
        except (OSError, ValueError, TypeError) as err:
            yield from (Outcome(jobs[k], w, h, error=str(err)) for _, jobs in batch)
            return
        for image, (_, jobs) in zip(out, batch):
            try:
                save_image_atomic(to_uint8(image), jobs[k].output)
                yield Outcome(jobs[k], w, h, seconds=(time.perf_counter() - start) / len(batch))
            except (OSError, ValueError) as err:
                yield Outcome(jobs[k], w, h, error=str(err))

