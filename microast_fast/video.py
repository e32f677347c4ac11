"""Video stylisation with PyAV: ``stylize_frames``, ``stylize_video`` and the ``microast-fast video`` command.

A video runs as a pipeline of three threads joined by bounded queues: a worker decodes (and demuxes the
audio), the calling thread runs the model on batches of frames, a worker encodes (and muxes the audio
unchanged). At most about ``4 * batch`` frames are in flight besides the model's batch, whatever the
video's length, and the model, decoding and encoding overlap.

What an output keeps of its input: the frame timestamps (so the frame rate, constant or variable), every
audio stream (packets copied, never re-encoded), the rotation of the display matrix, the colour matrix
and primaries tags, the sample aspect ratio, and the container's and streams' metadata tags (title,
language, creation time, location, ...; not the tags that describe the old encoding, such as
``encoder``). Not kept: subtitle and data streams, video streams after the first, and any mirroring in
the display matrix (PyAV 18 reads only its rotation angle, ``VideoFrame.rotation``).
"""

from __future__ import annotations

import functools
import queue
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

# PyAV, tqdm and .images (Pillow) are imported by the functions that use them: cli imports this module to
# register the subcommand, and `bench` must run where just torch and numpy are installed.

# Output suffix -> FFmpeg muxer. The temporary file's name ends in .partial, so the muxer cannot be
# guessed from it and is named here.
VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
PIXEL_FORMAT = "yuv420p"  # what every H.264 player decodes; it needs even dimensions
# Container and stream tags that describe the input's encoding, not its content: the output's own differ.
STALE_TAGS = {"encoder", "vendor_id", "major_brand", "minor_version", "compatible_brands", "duration"}
# The AVColorSpace values of the YUV matrices swscale converts with (BT.709, FCC, BT.470BG, SMPTE 170M,
# SMPTE 240M, BT.2020): an output keeps its input's; others (RGB, unspecified, ...) give BT.601, untagged.
YUV_MATRICES = {1, 4, 5, 6, 7, 9}
POLL_SECONDS = 0.1  # how often a blocked stage checks whether another one failed


class VideoError(ValueError):
    """An input that cannot be stylised as a video (unreadable, truncated, no video stream)."""


@dataclass
class VideoInfo:
    """What the output needs to know about an input before its first frame is written."""
    path: Path
    width: int  # the content frames' size: the input's, or resized by ``size``
    height: int
    frames: int | None  # as the container says, if it says
    rate: Fraction
    time_base: Fraction
    rotation: int  # degrees counter-clockwise, from the display matrix
    first_frame: np.ndarray  # [height, width, 3] uint8 RGB: the colours --preserve-color coral matches

    @property
    def encoded_size(self) -> tuple[int, int]:
        """(width, height) of the output: the content's, made even for yuv420p by ``pad_to_even``."""
        return self.width + self.width % 2, self.height + self.height % 2


def stylize_frames(model, frames: Iterable[np.ndarray], signals, alpha: float = 1.0,
                   batch: int = 1) -> Iterator[np.ndarray]:
    """Stylise RGB frames, ``[H, W, 3]`` uint8 numpy arrays, in batches of ``batch``; yields the stylised
    frames in order, ``[H, W, 3]`` uint8 of each frame's size (the model's padding to a multiple of 4 is
    cropped; values rounded as ``images.to_uint8`` does). ``signals`` is ``model.encode_style(style)``:
    the style is encoded once for all frames. Frames are read only as a batch fills, so any iterator of
    frames runs in bounded memory; a change of frame size ends a batch early."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    pending: list[np.ndarray] = []
    for frame in frames:
        if pending and frame.shape != pending[0].shape:
            yield from stylize_batch(model, pending, signals, alpha)
            pending = []
        pending.append(frame)
        if len(pending) == batch:
            yield from stylize_batch(model, pending, signals, alpha)
            pending = []
    if pending:
        yield from stylize_batch(model, pending, signals, alpha)


def stylize_batch(model, frames: list[np.ndarray], signals, alpha: float) -> list[np.ndarray]:
    """Frames of one size through the model as one batch. On CUDA the frames go up from pinned memory
    and come back into it with asynchronous copies, one synchronisation a batch."""
    h, w = frames[0].shape[:2]
    pixels = torch.from_numpy(np.stack(frames))  # [N, H, W, 3] uint8
    cuda = model.device.type == "cuda"
    if cuda:
        pixels = pixels.pin_memory()
    with torch.inference_mode():
        content = pixels.to(model.device, non_blocking=cuda).permute(0, 3, 1, 2).to(model.dtype).div_(255)
        out = model(content, signals, alpha)[:, :, :h, :w]
        out = out.float().mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        if cuda:
            host = torch.empty(out.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(out, non_blocking=True)
            torch.cuda.current_stream(model.device).synchronize()
            out = host
        return list(out.cpu().numpy())


def even_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """The content size for ``size=short_side``: the shorter side resized, the aspect kept, each side
    rounded to an even number (yuv420p); the input's own size without ``short_side``."""
    from .images import resized

    if not short_side:
        return width, height
    w, h = resized(width, height, short_side)
    return max(2, 2 * round(w / 2)), max(2, 2 * round(h / 2))


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even dimensions: an odd-sized frame gets its last row and/or column repeated once
    (the picture itself is never cropped, and a replicated edge is invisible after chroma subsampling)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def video_stream(container, path: Path):
    """The input's first video stream that is a video (not cover art)."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
    raise VideoError(f"{path} has no video stream ({kinds}): nothing to stylise; give a video file")


def probe(path: Path, size: int | None) -> VideoInfo:
    """Open the input and decode its first frame, before any output exists: an unreadable file fails
    here, and the rotation is known only from a decoded frame."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = video_stream(container, path)
            first = next(container.decode(stream), None)
            if first is None:
                raise VideoError(f"{path}: no video frame could be decoded; the file may be truncated or corrupt")
            rate = stream.guessed_rate or stream.average_rate  # FFmpeg's best guess; raw streams have no average
            if not rate:
                raise VideoError(f"{path}: the video stream has no frame rate; "
                                 "remux it first (ffmpeg -i IN -c copy OUT.mp4)")
            width, height = even_size(first.width, first.height, size)
            pixels = first.to_ndarray(format="rgb24", width=width, height=height, interpolation="LANCZOS")
            return VideoInfo(path, width, height, stream.frames or None, rate, stream.time_base, first.rotation,
                             pixels)
    except av.error.FFmpegError as err:
        raise VideoError(f"cannot read {path} as a video ({err.strerror}); is it a complete video file?") from None


def check_codec(codec: str) -> None:
    """Before any work: ``codec`` must be a video encoder of this FFmpeg build that takes yuv420p."""
    import av

    try:
        encoder = av.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:
        raise ValueError(f"no encoder {codec!r} in this FFmpeg build; try libx264, libx265 or libvpx-vp9") from None
    if encoder.type != "video" or PIXEL_FORMAT not in {f.name for f in encoder.video_formats or ()}:
        raise ValueError(f"the encoder {codec!r} does not take {PIXEL_FORMAT} video; "
                         "try libx264, libx265 or libvpx-vp9")


def copy_tags(source, target) -> None:
    """Metadata tags of a container or stream, less those that describe the input's encoding."""
    for key, value in source.metadata.items():
        if key.lower() not in STALE_TAGS:
            target.metadata[key] = value


def stylize_video(model, input_path, output_path, signals, alpha: float = 1.0, batch: int = 4,
                  size: int | None = None, crf: int = 18, codec: str = "libx264", overwrite: bool = False,
                  progress: bool = True) -> dict:
    """Stylise a video file into ``output_path`` (.mp4, .m4v, .mov or .mkv) with ``signals``
    (``model.encode_style(style)``), ``batch`` frames a model call.

    ``size`` resizes the content's shorter side (aspect kept, sides made even); without it the frames
    keep their size, and an odd width or height is padded by one replicated column or row for yuv420p
    (``pad_to_even``). The video is encoded with ``codec`` (any FFmpeg encoder that takes yuv420p) at
    ``crf``; audio is copied; see the module's docstring for the timing and metadata kept.

    The output is written to a hidden ``.NAME.XXXX.partial`` beside it and renamed when complete: an
    error or Ctrl-C removes it and leaves no file under the final name. An existing output is replaced
    only with ``overwrite``. A progress bar (frames, fps, ETA when the frame count is known) goes to
    stderr unless ``progress`` is False.

    Returns a summary: ``frames``, ``width`` and ``height`` (encoded), ``seconds`` (wall), ``fps``, and
    where the time went: ``model_seconds`` (the calling thread's work, the model's), ``decode_seconds``
    and ``encode_seconds`` (each worker's busy time, overlapping the model's), ``io_seconds`` (their sum).
    """
    from .images import atomic_file

    input_path, output_path = Path(input_path), Path(output_path)
    muxer = VIDEO_FORMATS.get(output_path.suffix.lower())
    if muxer is None:
        raise ValueError(f"cannot write {output_path}: give an output ending in {', '.join(VIDEO_FORMATS)}")
    if output_path.resolve() == input_path.resolve():
        raise ValueError(f"output {output_path} is the input; it is never overwritten. Choose another output")
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"output {output_path} exists; pass overwrite=True (--overwrite) to replace it")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    check_codec(codec)
    info = probe(input_path, size)
    start = time.perf_counter()
    with atomic_file(output_path) as file:
        stats = run_pipeline(model, signals, alpha, batch, info, file, muxer, codec, crf, progress)
    seconds = time.perf_counter() - start
    if info.frames and stats["frames"] < info.frames:
        # Not an error: a valid file can list more frames than it shows (an edit list that starts mid-GOP).
        warnings.warn(f"{input_path}: {stats['frames']} of the {info.frames} frames its container lists could be "
                      "decoded; the file may be truncated", stacklevel=2)
    width, height = info.encoded_size
    io_seconds = stats["decode_seconds"] + stats["encode_seconds"]
    return {"input": str(input_path), "output": str(output_path), "width": width, "height": height,
            "frames": stats["frames"], "seconds": seconds, "fps": stats["frames"] / seconds,
            "model_seconds": stats["model_seconds"], "io_seconds": io_seconds,
            "decode_seconds": stats["decode_seconds"], "encode_seconds": stats["encode_seconds"]}


class Stopped(Exception):
    """Raised in a pipeline stage that another stage's failure (or Ctrl-C) has stopped."""


END = object()  # the last item a channel carries


class Channel:
    """A bounded queue between two threads. ``put`` and iteration give up with ``Stopped`` once ``stop``
    is set, so no stage waits forever for one that failed; each side's waiting time is counted."""

    def __init__(self, size: int, stop: threading.Event):
        self.queue: queue.Queue = queue.Queue(size)
        self.stop = stop
        self.put_wait = 0.0
        self.get_wait = 0.0

    def put(self, item) -> None:
        start = time.perf_counter()
        while True:
            if self.stop.is_set():
                raise Stopped
            try:
                self.queue.put(item, timeout=POLL_SECONDS)
                break
            except queue.Full:
                pass
        self.put_wait += time.perf_counter() - start

    def __iter__(self):
        """The items up to ``END``."""
        while True:
            start = time.perf_counter()
            while True:
                if self.stop.is_set():
                    raise Stopped
                try:
                    item = self.queue.get(timeout=POLL_SECONDS)
                    break
                except queue.Empty:
                    pass
            self.get_wait += time.perf_counter() - start
            if item is END:
                return
            yield item


class Worker(threading.Thread):
    """A pipeline stage on its own thread. Its error is kept for the calling thread to raise, and stops
    the other stages; ``seconds`` is how long it ran."""

    def __init__(self, name: str, work, stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.work = work
        self.stop = stop
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        start = time.perf_counter()
        try:
            self.work()
        except Stopped:
            pass
        except BaseException as err:
            self.error = err
            self.stop.set()
        finally:
            self.seconds = time.perf_counter() - start


def run_pipeline(model, signals, alpha, batch, info: VideoInfo, file, muxer: str, codec: str, crf: int,
                 progress: bool) -> dict:
    """Decode, stylise and encode ``info.path`` into ``file``. The two containers are opened and closed
    here, and between those each is used by one worker only."""
    import av
    from tqdm import tqdm

    stop = threading.Event()
    decoded = Channel(max(4, 2 * batch), stop)  # frames and audio packets, decoder -> model
    to_encode = Channel(max(4, 2 * batch), stop)  # stylised frames and audio packets, model -> encoder
    with av.open(str(info.path)) as source, av.open(file, "w", format=muxer) as sink:
        video_in = video_stream(source, info.path)
        video_in.thread_type = "AUTO"
        audio = {}  # input stream index -> output stream
        for stream in source.streams.audio:
            if stream.codec_context.name not in sink.supported_codecs:
                raise ValueError(f"{info.path}: its {stream.codec_context.name} audio cannot be copied into a "
                                 f"{muxer} file; choose another output format (.mkv takes most)")
            audio[stream.index] = sink.add_stream_from_template(stream)
            copy_tags(stream, audio[stream.index])
        video_out = add_video_stream(sink, video_in, info, codec, crf)
        copy_tags(source, sink)

        decoder = Worker("decode", functools.partial(decode, source, video_in, info, decoded), stop)
        encoder = Worker("encode", functools.partial(encode, sink, video_out, audio, to_encode), stop)
        timestamps: deque = deque()  # of the frames between the two channels, in order

        def frames():
            """The decoded frames; audio packets go straight on to the encoder."""
            for item in decoded:
                if isinstance(item, av.Packet):
                    to_encode.put(item)
                else:
                    timestamps.append(item[0])
                    yield item[1]

        frame_count = 0
        start = time.perf_counter()
        decoder.start()
        encoder.start()
        try:
            with tqdm(total=info.frames, unit="frame", desc=info.path.name, file=sys.stderr,
                      disable=not progress, leave=False) as bar:
                for image in stylize_frames(model, frames(), signals, alpha, batch):
                    to_encode.put((timestamps.popleft(), image))
                    frame_count += 1
                    bar.update(1)
            to_encode.put(END)
            encoder.join()
        except Stopped:
            pass  # a worker failed: its error is raised below, once both have ended
        finally:
            stop.set()
            decoder.join()
            encoder.join()
        main_seconds = time.perf_counter() - start
        for worker in (decoder, encoder):
            if worker.error is not None:
                raise worker.error
    return {"frames": frame_count,
            "model_seconds": main_seconds - decoded.get_wait - to_encode.put_wait,
            "decode_seconds": decoder.seconds - decoded.put_wait,
            "encode_seconds": encoder.seconds - to_encode.get_wait}


def add_video_stream(sink, video_in, info: VideoInfo, codec: str, crf: int):
    """The output's video stream: the input's rate, time base (so input timestamps carry over as they
    are), rotation, colour tags and sample aspect ratio; yuv420p at ``crf``."""
    from av.video.reformatter import ColorRange

    stream = sink.add_stream(codec, rate=info.rate, options={"crf": str(crf)})
    stream.width, stream.height = info.encoded_size
    stream.pix_fmt = PIXEL_FORMAT
    stream.codec_context.time_base = info.time_base
    if video_in.codec_context.colorspace in YUV_MATRICES:
        stream.colorspace = video_in.codec_context.colorspace
    stream.color_primaries = video_in.codec_context.color_primaries
    stream.color_trc = video_in.codec_context.color_trc
    stream.color_range = ColorRange.MPEG
    if video_in.sample_aspect_ratio:
        stream.sample_aspect_ratio = video_in.sample_aspect_ratio
    if info.rotation:
        stream.set_display_rotation(info.rotation)
    copy_tags(video_in, stream)
    return stream


def decode(source, stream, info: VideoInfo, out: Channel) -> None:
    """Decoder stage: the video's frames as ``(pts, [H, W, 3] uint8 RGB)`` (converted with the input's
    own colour matrix and range, resized to the content size), the audio's packets as they are."""
    import av

    index = 0
    try:
        for packet in source.demux(stream, *source.streams.audio):
            if packet.stream.index != stream.index:
                if packet.dts is not None:  # demux ends each stream with an empty flush packet
                    out.put(packet)
                continue
            for frame in packet.decode():
                pixels = frame.to_ndarray(format="rgb24", width=info.width, height=info.height,
                                          interpolation="LANCZOS")
                pts = frame.pts if frame.pts is not None else round(index / (info.rate * info.time_base))
                out.put((pts, pixels))
                index += 1
    except av.error.FFmpegError as err:
        raise VideoError(f"{info.path}: decoding failed after {index} frames ({err.strerror}); "
                         "the file may be truncated or corrupt") from None
    out.put(END)


def encode(sink, stream, audio: dict, inbox: Channel) -> None:
    """Encoder stage: stylised frames encoded with their input timestamps (converted to yuv420p with the
    input's colour matrix), audio packets muxed unchanged; then the encoder is flushed."""
    import av
    from av.video.reformatter import ColorRange

    for item in inbox:
        if isinstance(item, av.Packet):
            item.stream = audio[item.stream.index]
            sink.mux(item)
            continue
        pts, image = item
        frame = av.VideoFrame.from_ndarray(pad_to_even(image), format="rgb24")
        frame = frame.reformat(format=PIXEL_FORMAT, dst_colorspace=stream.colorspace, dst_color_range=ColorRange.MPEG)
        frame.pts = pts
        frame.time_base = stream.codec_context.time_base
        sink.mux(stream.encode(frame))
    sink.mux(stream.encode())


# --- the ``video`` subcommand ----------------------------------------------------------------------------


def add_parser(subparsers, add_model_options, load_model, announce, add_ray_options=None, run_on_ray=None) -> None:
    """Register ``microast-fast video``. cli passes its own ``add_model_options``, ``load_model``,
    ``announce`` and, for ``--ray``, ``add_ray_options`` and ``run_on_ray`` in, so that this module never
    imports cli or distributed (both import it: that would be a circle)."""
    p = subparsers.add_parser("video", help="stylise video files (audio copied, timing and rotation kept)")
    p.add_argument("input", nargs="+", help="video files")
    p.add_argument("--style", action="append", required=True,
                   help="style image file (repeatable: one output a style, or one mixing them with --mix)")
    p.add_argument("--mix", default=None, help="one output mixing the styles with these weights, e.g. 0.3,0.7")
    p.add_argument("-o", "--output", required=True,
                   help=f"output file ({', '.join(VIDEO_FORMATS)}) for one output, else a directory for "
                        "<input>_stylized_<style>.mp4 files")
    p.add_argument("--batch", type=int, default=4, help="frames a model call (default: %(default)s)")
    p.add_argument("--crf", type=int, default=18, help="encoder quality, lower is better (default: %(default)s)")
    p.add_argument("--codec", default="libx264", help="FFmpeg video encoder (default: %(default)s)")
    p.add_argument("--size", type=int, default=None, help="resize frames so the shorter side is SIZE (default: keep)")
    p.add_argument("--style-size", type=int, default=512, help="shorter side of the style image (default 512; 0 keeps)")
    add_model_options(p)
    if add_ray_options is not None:
        add_ray_options(p)
    p.set_defaults(run=functools.partial(cmd_video, load_model=load_model, announce=announce, run_on_ray=run_on_ray))


def plan_outputs(inputs: list[str], output: str, styles: list[str], overwrite: bool,
                 mixed: bool) -> list[tuple[Path, tuple[Path, ...], Path]]:
    """(input, styles, output) of every output, checked before any work: one a style, or one mixing the
    styles if ``mixed``. The inputs and styles exist, outputs neither collide nor replace an input, and
    replace an existing file only with ``overwrite``."""
    sources, style_paths = [Path(p) for p in inputs], [Path(p) for p in styles]
    for what, path in [("input", p) for p in sources] + [("style", p) for p in style_paths]:
        if not path.is_file():
            raise ValueError(f"{what} {path} is not a file")
    style_sets = [tuple(style_paths)] if mixed else [(p,) for p in style_paths]
    pairs = [(source, style_set) for source in sources for style_set in style_sets]
    out = Path(output)
    if out.suffix and out.suffix.lower() not in VIDEO_FORMATS and not out.is_dir():
        raise ValueError(f"cannot write {out}: give an output ending in {', '.join(VIDEO_FORMATS)}, or a directory")
    if out.suffix.lower() in VIDEO_FORMATS:
        if len(pairs) > 1:
            raise ValueError(f"-o {out} names one file but there are {len(pairs)} outputs; give a directory")
        targets = [out]
    else:
        targets = [out / f"{source.stem}_stylized_{'+'.join(p.stem for p in style_set)}.mp4"
                   for source, style_set in pairs]
        if len(set(targets)) < len(targets):
            raise ValueError("two inputs share a file name stem, so their outputs would collide; rename one")
    inputs_resolved = {source.resolve() for source in sources}
    for target in targets:
        if target.resolve() in inputs_resolved:
            raise ValueError(f"output {target} is one of the inputs; it is never overwritten. Choose another -o")
        if target.exists() and not overwrite:
            raise ValueError(f"output {target} exists; pass --overwrite to replace it")
    return [(source, style_set, target) for (source, style_set), target in zip(pairs, targets)]


def cmd_video(args, load_model, announce, run_on_ray=None) -> int:
    """Each input video stylised with one style. A failing input is reported and the others still run
    (exit code 1); Ctrl-C stops the run, leaving no partial output (exit code 130)."""
    import av

    from .images import pixels_to_tensor, remove_leftovers
    from .jobs import StyleEncoder
    from .signals import parse_weights

    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    check_codec(args.codec)
    if getattr(args, "ray", None) is not None:
        return run_on_ray(args)
    weights = parse_weights(args.mix) if args.mix is not None else None
    if weights is not None and len(weights) != len(args.style):
        raise ValueError(f"--mix gives {len(weights)} weights for {len(args.style)} styles; give one weight per style")
    jobs = plan_outputs(args.input, args.output, args.style, args.overwrite, mixed=weights is not None)
    for _, _, target in jobs:
        target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target for _, _, target in jobs)
    model = load_model(args)
    announce(model, args)
    styles = StyleEncoder(model, args.style_size, weights)
    for path in args.style:
        try:
            styles.image(Path(path))
        except OSError as err:
            raise ValueError(f"cannot read the style {path} as an image ({err})") from None

    failures = 0
    for source, style_set, target in jobs:
        try:
            colours = None
            if model.preserve_color == "coral":  # recoloured to each video's first frame: the colours hold still
                colours = pixels_to_tensor(probe(source, args.size or None).first_frame)
            signals = styles.signals(style_set, colours)
            summary = stylize_video(model, source, target, signals, alpha=args.alpha, batch=args.batch,
                                    size=args.size or None, crf=args.crf, codec=args.codec,
                                    overwrite=args.overwrite)
        except KeyboardInterrupt:
            print(f"interrupted: {target} was not written", file=sys.stderr)
            return 130
        except (OSError, ValueError, RuntimeError, av.error.FFmpegError) as err:
            failures += 1
            print(f"skipped {source}: {err}", file=sys.stderr)
            continue
        print(f"{target}  {summary['width']}x{summary['height']}  {summary['frames']} frames  "
              f"{summary['fps']:.1f} fps  {summary['seconds']:.2f} s: model {summary['model_seconds']:.2f} s, "
              f"I/O {summary['io_seconds']:.2f} s (decode {summary['decode_seconds']:.2f} s, "
              f"encode {summary['encode_seconds']:.2f} s, overlapping the model)")
    if failures:
        print(f"{failures} of {len(jobs)} videos failed", file=sys.stderr)
    return 1 if failures else 0
