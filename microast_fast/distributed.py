"""Stylise many images or videos across Ray workers: ``stylize_images``, ``stylize_videos``, and
``microast-fast stylize|video --ray [ADDRESS]``. Needs the extra: ``pip install "microast-fast[ray]"``.

On Ray Data: one ``MicroAST`` per worker (an actor, ``1 / workers_per_gpu`` of a GPU, or ``threads``
CPU threads), each style encoded once per worker. A task is ``batch`` content images (default one) with
all their outputs, or one video, so a retried task redoes little; the images go out sorted by size, and
with ``batch`` above one those of one size in a task share a forward. Large images stream within ``max_memory`` inside the worker,
as in one process.

Nothing lost, nothing redone: every output is written to a temporary file and renamed; an output that
exists is skipped unless ``overwrite`` (so a rerun resumes after a crash or a preempted node); a worker
that dies has its tasks retried on a restarted one; what fails (an unreadable image, ...) is recorded
with its reason in ``manifest.json`` in the output folder and the others complete.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"


@dataclass
class ModelOptions:
    """How each worker builds its model (``MicroAST.from_pretrained``) and stylises."""
    backend: str = "auto"
    device: str | None = None  # default: cuda where the worker has a GPU, else cpu
    dtype: str | None = None  # default: float16 on CUDA, float32 on a CPU (as the command line)
    max_memory: str | int | None = None
    tile_size: int | None = None
    preserve_color: str | None = None
    alpha: float = 1.0
    size: int | None = None
    style_size: int | None = 512
    mix: list[float] | None = None
    threads: int = 1  # CPU threads a worker (torch.set_num_threads)
    # Workers sharing one GPU: a worker reads, stylises and writes in turn, and on a GPU the image codecs
    # take far longer than the model (docs/distributed.md), so several workers keep one GPU busy.
    workers_per_gpu: int = 1
    # Content images a task. Above 1, those of one size (and styles) share a forward
    # (``jobs.Stylizer.run_batched``): fewer, larger calls (for small images on GPUs), but an output may
    # then differ from the one-image forward's in the last bit (within the dtype's rule, not byte for byte).
    batch: int = 1
    cuda_graphs: bool = False  # MicroAST(cuda_graphs=True) on GPU workers


@dataclass
class Summary:
    """What a run did: outputs written now, found written already (skipped), failed (see the manifest)."""
    written: int = 0
    existing: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    manifest: str | None = None

    @property
    def per_second(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


def _build_model(options: ModelOptions):
    import torch

    from .model import MicroAST

    torch.set_num_threads(options.threads)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = options.dtype or ("float16" if torch.device(device).type == "cuda" else "float32")
    return MicroAST.from_pretrained(backend=options.backend, device=device, dtype=getattr(torch, dtype),
                                    max_memory=options.max_memory, tile_size=options.tile_size,
                                    preserve_color=options.preserve_color,
                                    cuda_graphs=options.cuda_graphs and torch.device(device).type == "cuda")


class ImageWorker:
    """A Ray Data actor: one model, its encoded styles, and a batch of rows, one content image each, in."""

    def __init__(self, options: ModelOptions):
        from .jobs import Stylizer

        self.model = _build_model(options)
        self.size = options.size
        self.stylizer = Stylizer(self.model, options.alpha, options.size, options.style_size, options.mix,
                                 show_tiles=False)

    def __call__(self, batch: dict) -> dict:
        from .jobs import Job, Outcome, UsageError, plan_jobs_memory

        items, outcomes = [], []
        for text in batch["jobs"]:
            jobs = [Job(Path(j["content"]), tuple(map(Path, j["styles"])), Path(j["output"])) for j in json.loads(text)]
            try:
                items.append((jobs[0].content, jobs,
                              plan_jobs_memory(self.model, jobs, self.size).get(jobs[0].content, (None, None))[1]))
            except UsageError as err:  # the memory budget cannot hold this image
                outcomes += [Outcome(job, error=str(err)) for job in jobs]
        return outcome_columns(outcomes + list(self.stylizer.run_batched(items)))


def outcome_columns(outcomes: list) -> dict:
    """``jobs.Outcome``s as the columns a worker returns to Ray Data (and the driver's ``on_outcome`` gets)."""
    return {"output": np.asarray([str(o.job.output) for o in outcomes]),
            "content": np.asarray([str(o.job.content) for o in outcomes]),
            "styles": np.asarray(["+".join(map(str, o.job.styles)) for o in outcomes]),
            "error": np.asarray([o.error or "" for o in outcomes]),
            "seconds": np.asarray([np.nan if o.seconds is None else o.seconds for o in outcomes], dtype=float),
            "width": np.asarray([o.width for o in outcomes], dtype=int),
            "height": np.asarray([o.height for o in outcomes], dtype=int),
            "worker_pid": np.full(len(outcomes), os.getpid())}


def require_ray():
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 (the extra installs ray[data]: pyarrow, pandas)
    except ImportError as err:
        raise RuntimeError(f'running on Ray needs the extra: pip install "microast-fast[ray]" ({err})') from None
    return ray


def connect(address: str | None, workers: int, threads: int) -> None:
    """Join the cluster at ``address`` ("auto", "ray://host:10001", ...), or start Ray on this machine."""
    ray = require_ray()

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, workers * threads), include_dashboard=False, log_to_driver=False)


def _resources(options: ModelOptions, gpus: bool) -> dict:
    # No retry settings: Ray Data restarts a worker that dies (killed, node preempted) and retries its
    # tasks by default (tested); outputs are written atomically, so a retried task rewrites the same files.
    return {"num_gpus": 1 / options.workers_per_gpu} if gpus else {"num_cpus": options.threads}


def _wants_gpus(options: ModelOptions) -> bool:
    ray = require_ray()

    if options.device is not None:
        return options.device.startswith("cuda")
    return ray.cluster_resources().get("GPU", 0) > 0


def _write_manifest(output_dir: Path, summary: Summary) -> Path:
    from .images import atomic_file

    path = output_dir / MANIFEST
    with atomic_file(path) as f:
        f.write(json.dumps({"written": summary.written, "existing": summary.existing, "failed": summary.failed},
                           indent=1).encode())
    return path


def _run(rows: list[dict], worker_class, options: ModelOptions, workers: int | None, address: str | None,
         output_dir: Path, total: int, on_outcome, progress: bool, summary: Summary, unit: str = "image",
         batch_size: int = 1) -> Summary:
    """``rows`` through ``worker_class`` actors on Ray Data, each outcome to ``on_outcome`` as it arrives."""
    ray = require_ray()
    from tqdm import tqdm

    connect(address, workers or 1, options.threads)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images, not blocks
    context.print_on_execution_start = False
    gpus = _wants_gpus(options)
    if workers is None:
        resources = ray.cluster_resources()
        workers = (int(resources.get("GPU", 1)) * options.workers_per_gpu if gpus
                   else max(1, int(resources.get("CPU", 1)) // options.threads))
    dataset = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // batch_size)).map_batches(
        worker_class, fn_constructor_kwargs={"options": options}, batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        **_resources(options, gpus))
    start = time.perf_counter()
    with tqdm(total=total, unit=unit, file=sys.stderr, disable=not progress) as bar:
        for row in dataset.iter_rows():
            outcome = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            if outcome["error"]:
                summary.failed.append({k: outcome[k] for k in ("content", "styles", "output", "error")})
            else:
                summary.written += 1
            bar.update(1)
            bar.set_postfix_str(f"{summary.written / (time.perf_counter() - start):.2f} {unit}s/s")
            if on_outcome is not None:
                on_outcome(outcome)
    summary.seconds = time.perf_counter() - start
    summary.manifest = str(_write_manifest(output_dir, summary))
    return summary


def stylize_images(contents, styles, output, *, mix: list[float] | None = None, ext: str = "png",
                   overwrite: bool = False, options: ModelOptions | None = None, workers: int | None = None,
                   address: str | None = None, on_outcome=None, progress: bool = True) -> Summary:
    """Every content image (files, folders or a glob's matches) with every style, or with the styles
    mixed by ``mix``, into the folder ``output`` (or the one file it names), named as ``microast-fast
    stylize`` names them; ``manifest.json`` goes into that folder.

    ``workers`` actors (default: one per ``options.threads`` CPU cores of the cluster; on GPUs
    ``options.workers_per_gpu`` a GPU), on the cluster at ``address`` or on a Ray started here. Outputs that exist are skipped unless
    ``overwrite``. ``on_outcome(dict)`` hears of each output as it is written or fails (keys ``output``,
    ``content``, ``styles``, ``error``, ``seconds``, ``width``, ``height``, ``worker_pid``)."""
    from .images import IMAGE_SUFFIXES, image_size, remove_leftovers
    from .jobs import expand_inputs, plan_jobs

    require_ray()
    options = options or ModelOptions()
    options.mix = mix
    output = Path(output)
    jobs = plan_jobs(expand_inputs(_paths(contents), "content"), expand_inputs(_paths(styles), "style"), output,
                     ext, overwrite=True, mix=mix)
    if output.suffix.lower() in IMAGE_SUFFIXES:  # one output file: the manifest goes beside it
        output = output.parent
    output.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    if not overwrite:
        summary.existing = sum(job.output.exists() for job in jobs)
        jobs = [job for job in jobs if not job.output.exists()]
    remove_leftovers(job.output for job in jobs)
    by_content: dict[Path, list] = {}
    for job in jobs:
        by_content.setdefault(job.content, []).append(job)

    def pixels(content: Path) -> int:
        try:
            h, w = image_size(content, options.size)
        except (OSError, ValueError):
            return 0  # unreadable: its task reports it
        return h * w

    rows = [{"jobs": json.dumps([{"content": str(j.content), "styles": [str(s) for s in j.styles],
                                  "output": str(j.output)} for j in content_jobs])}
            for content, content_jobs in sorted(by_content.items(), key=lambda item: (pixels(item[0]), str(item[0])))]
    if not rows:
        summary.manifest = str(_write_manifest(output, summary))
        return summary
    return _run(rows, ImageWorker, options, workers, address, output, len(jobs), on_outcome, progress, summary,
                batch_size=options.batch)


def _paths(spec) -> list[str]:
    """A folder, a file, a glob pattern or a list of them -> paths for ``jobs.expand_inputs``."""
    import glob

    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    paths = []
    for item in map(str, specs):
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        paths += matches or [item]
    return paths


class VideoWorker:
    """A Ray Data actor stylising one video a row with ``video.stylize_video``."""

    def __init__(self, options: ModelOptions, video_options: dict):
        from .jobs import StyleEncoder

        self.model = _build_model(options)
        self.options, self.video_options = options, video_options
        self.styles = StyleEncoder(self.model, options.style_size, options.mix)

    def __call__(self, batch: dict) -> dict:
        from .images import pixels_to_tensor
        from .jobs import Job, Outcome
        from .video import probe, stylize_video

        outcomes = []
        for text in batch["jobs"]:
            row = json.loads(text)
            job = Job(Path(row["content"]), tuple(map(Path, row["styles"])), Path(row["output"]))
            try:
                colours = None
                if self.model.preserve_color == "coral":  # recoloured to the video's first frame
                    colours = pixels_to_tensor(probe(job.content, self.options.size).first_frame)
                s = stylize_video(self.model, job.content, job.output, self.styles.signals(job.styles, colours),
                                  alpha=self.options.alpha, size=self.options.size, overwrite=True, progress=False,
                                  **self.video_options)
                outcomes.append(Outcome(job, s["width"], s["height"], seconds=s["seconds"]))
            except (OSError, ValueError, RuntimeError) as err:
                outcomes.append(Outcome(job, error=str(err)))
        return outcome_columns(outcomes)


def stylize_videos(inputs, styles, output, *, mix: list[float] | None = None, overwrite: bool = False,
                   options: ModelOptions | None = None, video_options: dict | None = None,
                   workers: int | None = None, address: str | None = None, on_outcome=None,
                   progress: bool = True) -> Summary:
    """Several videos over the workers, one video a task, into the folder ``output`` as
    ``<input>_stylized_<style>.mp4`` (``video_options``: ``batch``, ``crf``, ``codec``). Resumes, retries
    and records failures as ``stylize_images`` does."""
    from .images import remove_leftovers
    from .video import VIDEO_FORMATS, plan_outputs

    require_ray()
    options = options or ModelOptions()
    options.mix = mix
    output = Path(output)
    jobs = plan_outputs(_paths(inputs), str(output), _paths(styles), overwrite=True, mixed=mix is not None)
    if output.suffix.lower() in VIDEO_FORMATS:  # one output file: the manifest goes beside it
        output = output.parent
    output.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    if not overwrite:
        summary.existing = sum(target.exists() for _, _, target in jobs)
        jobs = [job for job in jobs if not job[2].exists()]
    remove_leftovers(target for _, _, target in jobs)
    rows = [{"jobs": json.dumps({"content": str(source), "styles": [str(s) for s in style_set], "output": str(target)})}
            for source, style_set, target in jobs]
    if not rows:
        summary.manifest = str(_write_manifest(output, summary))
        return summary

    class Worker(VideoWorker):  # video_options bound here: map_batches passes one constructor kwarg set
        def __init__(self, options):
            super().__init__(options, video_options or {})

    return _run(rows, Worker, options, workers, address, output, len(jobs), on_outcome, progress, summary, "video")


def summary_dict(summary: Summary) -> dict:
    return {**asdict(summary), "per_second": summary.per_second}
