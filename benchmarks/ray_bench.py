"""Scale-out throughput on Ray: images per second at 1 and 2 workers (1 CPU thread each), and the
scaling efficiency.

    python benchmarks/ray_bench.py [--images 32] [--size 512x384] [--workers 1,2] [--record]

Makes ``--images`` photos of ``--size`` (crops of the bundled images) and stylises them with one 512
style through ``distributed.stylize_images`` on a Ray started here, once per worker count, each into a
fresh folder. "steady" is images/s from the first output to the last (the workers' start-up, model
load and style encoding excluded); "wall" counts the whole call. ``--record`` appends rows to
benchmarks/results/ray.csv.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import tempfile
import time
from pathlib import Path

from PIL import Image

from microast_fast import distributed
from microast_fast.bench.cases import parse_size
from microast_fast.bench.machine import device_name, git_revision, versions
from microast_fast.images import asset_path

RESULTS = Path(__file__).resolve().parent / "results" / "ray.csv"
FIELDS = ["device", "workers", "threads", "images", "size", "steady_images_per_s", "wall_images_per_s", "efficiency",
          "torch", "ray", "git_rev", "date"]


def make_images(folder: Path, count: int, width: int, height: int) -> None:
    photos = [Image.open(asset_path(name)).convert("RGB") for name in ("chelsea.png", "coffee.png")]
    for i in range(count):
        photo = photos[i % 2].resize((width + i, height + i))
        photo.crop((i, i, i + width, i + height)).save(folder / f"img{i:03d}.png")


def main(argv: list[str] | None = None) -> int:
    import ray
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", default="384x512", help="HxW (default: %(default)s)")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    _, height, width = parse_size(args.size)
    counts = [int(w) for w in args.workers.split(",")]
    ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        make_images(folder, args.images, width, height)
        for workers in counts:
            stamps = []
            start = time.perf_counter()
            summary = distributed.stylize_images(
                folder, asset_path("hubble_deep_field.jpg"), Path(tmp) / f"out{workers}", workers=workers,
                options=distributed.ModelOptions(backend="torch", device="cpu", dtype="float32"),
                on_outcome=lambda outcome: stamps.append(time.perf_counter()), progress=False)
            wall = time.perf_counter() - start
            steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
            rows.append({"workers": workers, "steady": steady, "wall": summary.written / wall})
            print(f"{workers} worker(s): {summary.written} images, steady {steady:.2f} images/s, "
                  f"wall {summary.written / wall:.2f} images/s ({wall:.1f} s)")
    base = rows[0]["steady"] / counts[0]
    for row in rows:
        row["efficiency"] = row["steady"] / (base * row["workers"])
        print(f"{row['workers']} worker(s): scaling efficiency {100 * row['efficiency']:.0f}%")
    if args.record:
        new = not RESULTS.exists()
        meta = versions()
        with open(RESULTS, "a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            for row in rows:
                writer.writerow({"device": device_name(torch.device("cpu")).replace(f"{torch.get_num_threads()} threads",
                                                                                    "1 thread a worker"),
                                 "workers": row["workers"], "threads": 1, "images": args.images, "size": args.size,
                                 "steady_images_per_s": round(row["steady"], 3),
                                 "wall_images_per_s": round(row["wall"], 3), "efficiency": round(row["efficiency"], 3),
                                 "torch": meta["torch"], "ray": ray.__version__, "git_rev": git_revision(),
                                 "date": datetime.date.today().isoformat()})
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
