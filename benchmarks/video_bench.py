"""Video throughput: frames per second of ``microast-fast video``'s pipeline, and the model's share of it.

    python benchmarks/video_bench.py [--size 1080p] [--frames 48] [--device cpu] [--dtype float32]
                                     [--backend auto] [--batch 4] [--record [--results FILE]]

Makes a clip (a bundled photo panning, H.264 at crf 18, ``--frames`` frames at 24 fps, no audio) in a
temporary folder, then stylises it with ``video.stylize_video`` and a 512x512 style, as the command
does: decode and encode on worker threads, the model on the calling thread. fps counts the whole run
(opening the files to the renamed output); "model" is the calling thread's time, decode and encode the
workers' busy time, which overlaps it. ``--record`` appends a row to benchmarks/results/video.csv (or ``--results``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from microast_fast import MicroAST
from microast_fast.bench.cases import parse_size
from microast_fast.bench.machine import device_name, git_revision, versions
from microast_fast.images import asset_path, load_image
from microast_fast.video import stylize_video

RESULTS = Path(__file__).resolve().parent / "results" / "video.csv"
FIELDS = ["device", "backend", "dtype", "size", "batch", "frames", "fps", "model_share", "seconds", "torch", "triton",
          "git_rev", "date"]


def write_clip(path: Path, width: int, height: int, frames: int) -> None:
    """A bundled photo, enlarged to cover the frame, panning by 4 pixels a frame."""
    import av

    photo = Image.open(asset_path("chelsea.png")).convert("RGB")
    scale = max((width + 4 * frames) / photo.width, height / photo.height)
    photo = np.asarray(photo.resize((round(photo.width * scale) + 1, round(photo.height * scale) + 1)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            pixels = np.ascontiguousarray(photo[:height, 4 * i:4 * i + width])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1080p", help="1080p, 4k, N or HxW (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: float16 on CUDA, float32 elsewhere")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--record", action="store_true", help="append a row to --results")
    parser.add_argument("--results", type=Path, default=RESULTS, help="CSV for --record (default: %(default)s)")
    args = parser.parse_args(argv)
    label, height, width = parse_size(args.size)
    dtype_name = args.dtype or ("float16" if torch.device(args.device).type == "cuda" else "float32")
    model = MicroAST.from_pretrained(backend=args.backend, device=args.device, dtype=getattr(torch, dtype_name))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, width, height, args.frames)
        with torch.inference_mode():
            signals = model.encode_style(load_image(asset_path("hubble_deep_field.jpg"), 512).to(model.device, model.dtype))
        s = stylize_video(model, clip, Path(tmp) / "out.mp4", signals, batch=args.batch, progress=False)
    share = s["model_seconds"] / s["seconds"]
    device = device_name(model.device)
    print(f"{device}, {model.active_backend} {dtype_name}, {label} ({width}x{height}), batch {args.batch}: "
          f"{s['frames']} frames in {s['seconds']:.2f} s = {s['fps']:.2f} fps; model {s['model_seconds']:.2f} s "
          f"({100 * share:.0f}%), decode {s['decode_seconds']:.2f} s, encode {s['encode_seconds']:.2f} s")
    if args.record:
        meta = versions()
        row = {"device": device, "backend": model.active_backend, "dtype": dtype_name, "size": label,
               "batch": args.batch, "frames": s["frames"], "fps": round(s["fps"], 3), "model_share": round(share, 3),
               "seconds": round(s["seconds"], 3), "torch": meta["torch"], "triton": meta["triton"],
               "git_rev": git_revision(), "date": datetime.date.today().isoformat()}
        new = not args.results.exists()
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
