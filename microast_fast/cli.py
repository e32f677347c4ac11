"""The ``microast-fast`` command: ``stylize``, ``demo`` and ``bench``."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from .dispatch import BACKEND_CHOICES
from .jobs import Outcome, Stylizer, UsageError, expand_inputs, parse_mix, plan_jobs, plan_jobs_memory, stylize_file
# Image I/O (.images: Pillow, pypng, tifffile) is imported by the functions that read or write images
# only, so that `bench` runs where just torch and numpy are installed, such as a bare GPU machine.

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# (content, style) pairs of the bundled example images shown by ``demo``.
DEMO_PAIRS = (("chelsea.png", "hubble_deep_field.jpg"), ("coffee.png", "gravel.png"))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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

    if args.cuda_graphs and not str(args.device).startswith("cuda"):
        raise UsageError(f"--cuda-graphs replays CUDA graphs: it needs --device cuda, not {args.device}")
    return MicroAST.from_pretrained(backend=args.backend, device=args.device, dtype=DTYPES[args.dtype],
                                    max_memory=args.max_memory, tile_size=args.tile_size,
                                    preserve_color=args.preserve_color, cuda_graphs=args.cuda_graphs)


def announce(model, args) -> None:
    """The first line of output: which backend runs, on what, in what dtype, and why."""
    choice = model.backend_choice
    print(f"backend {choice.backend} ({choice.why}) on {model.device}, {args.dtype}", file=sys.stderr)


def cmd_stylize(args) -> int:
    from PIL import Image
    from tqdm import tqdm

    from .images import IMAGE_SUFFIXES, remove_leftovers

    # Pillow warns above 89 megapixels and refuses above 179 ("decompression bomb"): the very images
    # streaming exists for. Here the user named the files, and --max-memory is checked against each
    # image's size from its header before it is decoded.
    Image.MAX_IMAGE_PIXELS = None
    if args.ray is not None:
        from . import distributed

        return run_on_ray(args, distributed.stylize_images, args.content, "images", ext=args.ext)
    contents = expand_inputs(args.content, "content")
    styles = expand_inputs(args.style, "style")
    out = Path(args.output)
    mix = parse_mix(args.mix)
    jobs = plan_jobs(contents, styles, out, args.ext, args.overwrite, mix)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(job.output for job in jobs)
    model = load_model(args)
    plans = plan_jobs_memory(model, jobs, args.size)
    announce(model, args)
    stylizer = Stylizer(model, args.alpha, args.size, args.style_size, mix)

    failures = 0
    bar = tqdm(total=len(jobs), unit="image", disable=len(jobs) < 2, file=sys.stderr)
    for content_path in contents:
        content_jobs = [j for j in jobs if j.content == content_path]
        for outcome in stylizer.run(content_path, content_jobs, plans.get(content_path, (None, None))[1]):
            bar.update(1)
            tqdm.write(outcome_line(outcome, model.device), file=sys.stdout if outcome.error is None else sys.stderr)
            failures += outcome.error is not None
    bar.close()
    if failures:
        print(f"{failures} of {len(jobs)} outputs failed", file=sys.stderr)
    return 1 if failures else 0


def run_videos_on_ray(args) -> int:
    from . import distributed

    return run_on_ray(args, distributed.stylize_videos, args.input, "videos",
                      video_options={"batch": args.batch, "crf": args.crf, "codec": args.codec})


def outcome_line(outcome: Outcome, device: torch.device) -> str:
    """What the command prints of one output."""
    job = outcome.job
    if outcome.error is not None:
        return f"skipped {job.content} with style {'+'.join(map(str, job.styles))}: {outcome.error}"
    return f"{job.output}  {outcome.width}x{outcome.height}  {outcome.seconds:.3f} s with writing  {peak_memory(device)}"


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


def add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray workers: on a Ray started here, or on the cluster at ADDRESS (auto, "
                        "ray://host:10001); outputs that exist are skipped, so a rerun resumes")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers (default: --workers-per-gpu a GPU, or one per --worker-threads CPU cores)")
    p.add_argument("--worker-threads", type=int, default=1, help="CPU threads a Ray worker (default: 1)")
    p.add_argument("--workers-per-gpu", type=int, default=1,
                   help="Ray workers sharing a GPU, to overlap image decoding and encoding (default: 1)")


def ray_options(args):
    """``distributed.ModelOptions`` from the command line."""
    from .distributed import ModelOptions

    if min(args.workers or 1, args.worker_threads, args.workers_per_gpu, getattr(args, "ray_batch", 1)) < 1:
        raise UsageError("--workers, --worker-threads, --workers-per-gpu and --ray-batch must be at least 1")
    return ModelOptions(backend=args.backend, device=args.device, dtype=args.dtype, max_memory=args.max_memory,
                        tile_size=args.tile_size, preserve_color=args.preserve_color, alpha=args.alpha,
                        size=args.size or None, style_size=args.style_size, threads=args.worker_threads,
                        workers_per_gpu=args.workers_per_gpu, batch=getattr(args, "ray_batch", 1),
                        cuda_graphs=args.cuda_graphs)


def run_on_ray(args, stylize, inputs: list[str], unit: str, **kwargs) -> int:
    """``distributed.stylize_images`` or ``stylize_videos`` with the command line's options; prints as the
    single-process command does, each output as its worker finishes it."""
    options = ray_options(args)

    from tqdm import tqdm

    def report(outcome: dict) -> None:
        if outcome["error"]:
            tqdm.write(f"skipped {outcome['content']} with style {outcome['styles']}: {outcome['error']}",
                       file=sys.stderr)
        else:
            tqdm.write(f"{outcome['output']}  {outcome['width']}x{outcome['height']}  {outcome['seconds']:.3f} s "
                       f"with writing  (worker {outcome['worker_pid']})", file=sys.stdout)

    summary = stylize(inputs, args.style, args.output,
                      mix=parse_mix(args.mix), overwrite=args.overwrite, options=options, workers=args.workers,
                      address=args.ray or None, on_outcome=report, **kwargs)
    if summary.existing:
        print(f"{summary.existing} outputs existed already and were skipped (--overwrite replaces them)",
              file=sys.stderr)
    print(f"{summary.written} written in {summary.seconds:.1f} s ({summary.per_second:.2f} {unit}/s); "
          f"manifest: {summary.manifest}", file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} outputs failed (listed in {summary.manifest})", file=sys.stderr)
    return 1 if summary.failed else 0


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
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay each image size's forward from a CUDA graph (GPU; for video frames and folders of "
                        "same-sized images; not yet measured on a GPU, so off by default)")


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
    add_ray_options(p)
    p.add_argument("--ray-batch", type=int, default=1,
                   help="with --ray: content images a task; those of one size share a forward (faster for small "
                        "images on GPUs; outputs may then differ from one-image forwards in the last bit)")
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
    video.add_parser(sub, add_model_options, load_model, announce, add_ray_options, run_videos_on_ray)
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
