"""The ``microast-fast`` command: ``stylize``, ``demo`` and ``bench``."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import streaming
from .dispatch import BACKEND_CHOICES
# Image I/O (.images: Pillow, pypng, tifffile) is imported by the functions that read or write images
# only, so that `bench` runs where just torch and numpy are installed, such as a bare GPU machine.

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# (content, style) pairs of the bundled example images shown by ``demo``.
DEMO_PAIRS = (("chelsea.png", "hubble_deep_field.jpg"), ("coffee.png", "gravel.png"))


class UsageError(Exception):
    """A command line that cannot run as given; reported before any image is processed."""


@dataclass
class Job:
    content: Path
    styles: tuple[Path, ...]  # one style, or the styles that --mix mixes into one
    output: Path


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak GPU {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    # ru_maxrss is in KiB on Linux: the high-water mark of the whole process so far.
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def default_dtype(device) -> str:
    """float16 on a CUDA GPU: the kernels' fast path, on every GPU they support (fp32 runs them at about
    the reference's speed); float32 elsewhere (bf16 is faster on some CPUs but below fp16's quality)."""
    return "float16" if torch.device(device).type == "cuda" else "float32"


def load_model(args):
    from .model import MicroAST

    return MicroAST.from_pretrained(backend=args.backend, device=args.device, dtype=DTYPES[args.dtype],
                                    max_memory=args.max_memory, tile_size=args.tile_size,
                                    preserve_color=args.preserve_color)


def announce(model, args) -> None:
    """The first line of output: which backend runs, on what, in what dtype, and why."""
    choice = model.backend_choice
    print(f"backend {choice.backend} ({choice.why}) on {model.device}, {args.dtype}", file=sys.stderr)


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


def stream_file(model, pixels: np.ndarray, signals, alpha: float, plan, output: Path, progress_desc: str) -> None:
    """One content image through the tiled executor, written band by band to ``output``: the input stays
    8-bit, and PNG/TIFF outputs never exist whole in memory. A progress bar shows on long runs."""
    from tqdm import tqdm

    from .images import pixels_to_tensor, save_bands_atomic, to_uint8

    h, w = pixels.shape[:2]

    def read(y0, y1, x0, x1):
        return pixels_to_tensor(pixels[y0:y1, x0:x1]).to(model.device, model.dtype)

    with tqdm(total=streaming.tile_count(h, w, plan.tile), desc=progress_desc, unit="tile", leave=False,
              delay=2.0, file=sys.stderr) as bar, torch.inference_mode():
        bands = model.stream(read, h, w, signals, alpha, plan=plan, progress=bar.update)
        rows = (to_uint8(band[0, :, :h - y0, :w]) for y0, band in bands if y0 < h)
        save_bands_atomic(rows, h, w, output)


def cmd_stylize(args) -> int:
    from PIL import Image
    from tqdm import tqdm

    from .images import (IMAGE_SUFFIXES, load_image, pixels_to_tensor, read_pixels, remove_leftovers,
                         save_image_atomic, to_uint8)
    from .signals import StyleSignals

    # Pillow warns above 89 megapixels and refuses above 179 ("decompression bomb"): the very images
    # streaming exists for. Here the user named the files, and --max-memory is checked against each
    # image's size from its header before it is decoded.
    Image.MAX_IMAGE_PIXELS = None
    contents = expand_inputs(args.content, "content")
    styles = expand_inputs(args.style, "style")
    out = Path(args.output)
    jobs = plan_jobs(contents, styles, out, args.ext, args.overwrite, parse_mix(args.mix))
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(job.output for job in jobs)
    model = load_model(args)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    plans = plan_jobs_memory(model, jobs, args.size)
    announce(model, args)

    failures = 0
    encoded: dict[Path, StyleSignals] = {}
    recolour = args.preserve_color == "coral"

    def signals_of(job: Job, pixels: np.ndarray) -> StyleSignals:
        """Each style encoded once a run (with --preserve-color coral, once per content: it is recoloured
        to the content's colours first); a mix is one more set of signals."""
        if recolour:
            encoded.clear()
            step = max(1, int((pixels.shape[0] * pixels.shape[1] / 4e6) ** 0.5))  # colour statistics of <= 4 Mpx
            colours = pixels_to_tensor(pixels[::step, ::step])
        for path in job.styles:
            if path not in encoded:
                style = load_image(path, args.style_size or None).to(device, dtype)
                with torch.inference_mode():
                    encoded[path] = model.encode_style(style, content=colours if recolour else None)
        if len(job.styles) == 1:
            return encoded[job.styles[0]]
        return StyleSignals.mix([encoded[path] for path in job.styles], parse_mix(args.mix))

    bar = tqdm(total=len(jobs), unit="image", disable=len(jobs) < 2, file=sys.stderr)
    for content_path in contents:
        content_jobs = [j for j in jobs if j.content == content_path]
        plan = plans.get(content_path, (None, None))[1]
        try:
            pixels = read_pixels(content_path, args.size)
            content = pixels_to_tensor(pixels).to(device, dtype) if plan is None else None
        except (OSError, ValueError) as err:
            failures += len(content_jobs)
            bar.update(len(content_jobs))
            tqdm.write(f"skipped {content_path}: cannot read it as an image ({err})", file=sys.stderr)
            continue
        for job in content_jobs:
            bar.update(1)
            try:
                signals = signals_of(job, pixels)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                if plan is None:
                    image = to_uint8(stylize_file(model, content, signals, args.alpha))
                    save_image_atomic(image, job.output)
                else:
                    stream_file(model, pixels, signals, args.alpha, plan, job.output, content_path.name)
                seconds = time.perf_counter() - start
            except (OSError, ValueError, TypeError) as err:
                failures += 1
                tqdm.write(f"skipped {job.content} with style {'+'.join(map(str, job.styles))}: {err}", file=sys.stderr)
                continue
            h, w = pixels.shape[:2]
            tqdm.write(f"{job.output}  {w}x{h}  {seconds:.3f} s with writing  {peak_memory(device)}")
    bar.close()
    if failures:
        print(f"{failures} of {len(jobs)} outputs failed", file=sys.stderr)
    return 1 if failures else 0


def cmd_demo(args) -> int:
    from PIL import Image

    from .images import IMAGE_SUFFIXES, asset_path, load_image, save_image_atomic, to_uint8

    out = Path(args.output)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"-o {out} must be an image file name such as demo.png")
    if out.exists() and not args.overwrite:
        raise UsageError(f"output {out} exists; pass --overwrite to replace it")
    model = load_model(args)
    announce(model, args)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    row_height = 256
    rows = []
    start = time.perf_counter()
    for content_name, style_name in DEMO_PAIRS:
        content = load_image(asset_path(content_name)).to(device, dtype)
        style = load_image(asset_path(style_name), 512).to(device, dtype)
        with torch.inference_mode():
            result = stylize_file(model, content, model.encode_style(style, content=content), args.alpha)
        tiles = [Image.fromarray(to_uint8(t[0] if t.dim() == 4 else t)) for t in (content, style, result)]
        tiles = [t.resize((round(t.width * row_height / t.height), row_height), Image.Resampling.LANCZOS) for t in tiles]
        row = Image.new("RGB", (sum(t.width for t in tiles), row_height))
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width
        rows.append(row)
    seconds = time.perf_counter() - start
    panel = Image.new("RGB", (max(r.width for r in rows), row_height * len(rows)), "white")
    for i, row in enumerate(rows):
        panel.paste(row, (0, i * row_height))
    save_image_atomic(panel, out)
    print(f"wrote {out}: content | style | result, backend {model.active_backend} on {device}, "
          f"{seconds:.2f} s, {peak_memory(device)}")
    return 0


def cmd_warmup(args) -> int:
    """Compile and tune the kernels for these sizes ahead of the first real image (e.g. in a container
    build): Triton keeps compiled kernels and autotuning choices on disk (``TRITON_CACHE_DIR``, default
    ``~/.triton/cache``), so a later process starts fast; the self-check verdict is kept too."""
    from .bench.cases import parse_size

    sizes = [parse_size(text) for text in args.sizes or ["1080p", "4k"]]
    model = load_model(args)
    announce(model, args)
    generator = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, args.style_size, args.style_size, generator=generator).to(model.device, model.dtype)
    for label, height, width in sizes:
        content = torch.rand(1, 3, height, width, generator=generator).to(model.device, model.dtype)
        seconds = []
        for _ in range(2):  # the first call compiles and tunes (or finds both on disk); the second runs
            start = time.perf_counter()
            with torch.inference_mode():
                model(content, style, args.alpha)
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            seconds.append(time.perf_counter() - start)
        print(f"{label} ({width}x{height}): first call {seconds[0]:.2f} s, then {seconds[1] * 1e3:.1f} ms")
    return 0


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="default: the fastest available")
    p.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                   help="compute dtype (default: float16 on a CUDA GPU, float32 elsewhere)")
    p.add_argument("--alpha", type=float, default=1.0, help="stylisation strength in [0, 1] (default: 1)")
    p.add_argument("--preserve-color", choices=["coral", "luminance"], default=None,
                   help="keep the content's colours: coral recolours the style to them before encoding, "
                        "luminance keeps the content's chroma (YCbCr)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (inputs never)")
    p.add_argument("--max-memory", default=None,
                   help="stream each image in tiles within this working-memory budget, e.g. 2GB (exact result)")
    p.add_argument("--tile-size", type=int, default=None, help="stream in tiles of this many quarter-res pixels a side")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microast-fast", description="MicroAST style transfer with fused kernels.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stylize", help="stylise content images with style images")
    p.add_argument("content", nargs="+", help="content image files or directories")
    p.add_argument("--style", action="append", required=True, help="style image file or directory (repeatable)")
    p.add_argument("-o", "--output", required=True, help="output file (one output) or directory")
    p.add_argument("--size", type=int, default=None, help="resize content so its shorter side is SIZE (default: keep)")
    p.add_argument("--style-size", type=int, default=512, help="shorter side of style images (default 512; 0 keeps)")
    p.add_argument("--ext", default="png", help="output format when -o is a directory (default: png)")
    p.add_argument("--mix", default=None,
                   help="one output mixing the styles with these weights, e.g. 0.3,0.7 (default: one output a style)")
    add_model_options(p)
    p.set_defaults(run=cmd_stylize)

    p = sub.add_parser("demo", help="stylise the bundled example images with the bundled weights (offline)")
    p.add_argument("-o", "--output", default="demo.png", help="output image (default: %(default)s)")
    add_model_options(p)
    p.set_defaults(run=cmd_demo)
    p = sub.add_parser("warmup", help="compile and tune the kernels ahead for given sizes (kept on disk)")
    p.add_argument("--size", action="append", dest="sizes",
                   help="content size to prepare: 1080p, 4k, 8k, N or HxW (repeatable; default: 1080p and 4k)")
    p.add_argument("--style-size", type=int, default=512, help="side of the style image (default: %(default)s)")
    add_model_options(p)
    p.set_defaults(run=cmd_warmup)

    from . import bench, video
    bench.add_parser(sub)
    video.add_parser(sub, add_model_options, load_model, announce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 0.0 <= args.alpha <= 1.0:
            raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
        for name in ("size", "style_size"):
            value = getattr(args, name, None)
            if value is not None and value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if getattr(args, "dtype", None) == "auto":
            args.dtype = default_dtype(args.device)
        return args.run(args)
    except (UsageError, ValueError, RuntimeError) as err:
        print(f"microast-fast: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
