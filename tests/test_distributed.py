"""Scale-out on Ray (microast_fast/distributed.py), on a local Ray of this machine's 2 cores: the same
outputs as one process, a failed image in the manifest, a killed worker's work retried, a rerun after an
interrupted driver that redoes nothing. One Ray session serves the in-process tests; the interrupt test
runs the command line in subprocesses, as a user would."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray")

from microast_fast import cli, distributed  # noqa: E402
from microast_fast.images import asset_path, partial_files  # noqa: E402

pytestmark = pytest.mark.slow  # Ray's start-up and its workers' models: about a minute in all
STYLES = [asset_path("gravel.png"), asset_path("hubble_deep_field.jpg")]
OPTIONS = ["--backend", "torch", "--dtype", "float32", "--device", "cpu", "--style-size", "32"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_folder(folder, count=12, scale=1):
    """``count`` readable images (photos of odd sizes, ``scale`` x about 40x25, one of them grayscale) and
    a corrupt file."""
    folder.mkdir()
    photo = Image.open(asset_path("chelsea.png"))
    crops = [photo.crop((7 * i, 3 * i, 7 * i + 33 + i, 3 * i + 21 + 2 * i)) for i in range(count - 1)]
    for i, crop in enumerate(crops + [photo.convert("L").crop((0, 0, 37, 29))]):
        crop = crop.resize((crop.width * scale, crop.height * scale)) if scale > 1 else crop
        crop.save(folder / (f"p{i:02d}.png" if i < count - 1 else "gray.png"))
    (folder / "corrupt.png").write_bytes(b"\x89PNG but no image")
    return folder


def options():
    return distributed.ModelOptions(backend="torch", device="cpu", dtype="float32", style_size=32)


def test_outputs_match_one_process_and_failures_go_to_the_manifest(local_ray, tmp_path):
    folder = make_folder(tmp_path / "in")
    # One thread, as each worker: oneDNN's fp32 sums depend on the thread count (measured: 4.8e-7 apart
    # between 1 and 2 threads, one 8-bit level in a few pixels).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["stylize", str(folder), "--style", str(STYLES[0]), "--style", str(STYLES[1]),
                         "-o", str(tmp_path / "single"), *OPTIONS]) == 1  # the corrupt file
    finally:
        torch.set_num_threads(threads)
    summary = distributed.stylize_images(folder, STYLES, tmp_path / "ray", options=options(), workers=2,
                                         progress=False)
    single = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert len(single) == 24 and summary.written == 24
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(single + [distributed.MANIFEST])
    for name in single:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "ray" / distributed.MANIFEST).read_text())
    assert manifest["written"] == 24 and len(manifest["failed"]) == 2
    assert {f["content"] for f in manifest["failed"]} == {str(folder / "corrupt.png")}
    assert all("cannot read it as an image" in f["error"] for f in manifest["failed"])


def test_a_killed_worker_has_its_work_redone(local_ray, tmp_path):
    folder = make_folder(tmp_path / "in", count=8)
    killed = []

    def kill_the_first_worker(outcome):
        if not killed:
            killed.append(outcome["worker_pid"])
            os.kill(outcome["worker_pid"], signal.SIGKILL)

    summary = distributed.stylize_images(folder, STYLES[:1], tmp_path / "out", options=options(), workers=2,
                                         on_outcome=kill_the_first_worker, progress=False)
    assert killed and summary.written == 8 and len(summary.failed) == 1  # 7 crops and the gray one; the corrupt file
    for image in folder.iterdir():
        output = tmp_path / "out" / f"{image.stem}_stylized_gravel.png"
        assert output.exists() == (image.name != "corrupt.png")
        assert not partial_files(output)
        if output.exists():
            Image.open(output).load()  # complete


def start_cli(folder, out):
    return subprocess.Popen([sys.executable, "-m", "microast_fast.cli", "stylize", str(folder), "--style",
                             str(STYLES[0]), "-o", str(out), "--ray", "--workers", "2", *OPTIONS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_interrupted_run_resumes_without_redoing(tmp_path):
    folder = make_folder(tmp_path / "in", count=12, scale=12)  # a few tenths of a second each: time to interrupt
    out = tmp_path / "out"
    first = start_cli(folder, out)
    deadline = time.monotonic() + 240
    while len(list(out.glob("*.png"))) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert 2 <= len(done) < 12, "interrupted too late to show a resume"
    second = start_cli(folder, out)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 1, stderr  # the corrupt file
    assert f"{len(done)} outputs existed already and were skipped" in stderr
    outputs = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(outputs) == 12 and not list(out.glob(".*.partial"))
    assert all(outputs[name] == mtime for name, mtime in done.items())  # not recomputed
    manifest = json.loads((out / distributed.MANIFEST).read_text())
    assert [f["content"] for f in manifest["failed"]] == [str(folder / "corrupt.png")]


def test_paths_take_folders_files_and_globs(tmp_path):
    folder = make_folder(tmp_path / "in", count=3)
    assert distributed._paths(folder) == [str(folder)]
    assert distributed._paths(str(folder / "p*.png")) == [str(folder / "p00.png"), str(folder / "p01.png")]
    assert distributed._paths([folder / "gray.png", str(folder / "none*.png")]) == [
        str(folder / "gray.png"), str(folder / "none*.png")]  # a glob with no match: reported as missing



def test_videos_one_a_task(local_ray, tmp_path):
    pytest.importorskip("av")
    from test_video import decoded_frames, write_clip

    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "a.mp4", frames=12)
    write_clip(folder / "b.mp4", frames=9, audio=False)
    (folder / "bad.mp4").write_bytes(b"not a video")
    summary = distributed.stylize_videos(sorted(folder.iterdir()), STYLES[0], tmp_path / "out", options=options(),
                                         workers=2, progress=False)
    assert summary.written == 2 and [f["content"] for f in summary.failed] == [str(folder / "bad.mp4")]
    assert len(decoded_frames(tmp_path / "out" / "a_stylized_gravel.mp4")) == 12
    assert len(decoded_frames(tmp_path / "out" / "b_stylized_gravel.mp4")) == 9


def test_images_of_one_size_share_a_forward(tmp_path, monkeypatch):
    """``batch`` above one (``jobs.Stylizer.run_batched``): same-size images go through the model together,
    within one 8-bit level of their one-image outputs; other sizes and unreadable files one by one."""
    from microast_fast import MicroAST
    from microast_fast.jobs import Job, Stylizer

    folder = tmp_path / "in"
    folder.mkdir()
    photo = Image.open(asset_path("chelsea.png"))
    for i in range(3):
        photo.crop((20 * i, 10 * i, 20 * i + 41, 10 * i + 27)).save(folder / f"same{i}.png")
    photo.crop((0, 0, 30, 22)).save(folder / "other.png")
    (folder / "corrupt.png").write_bytes(b"no image")
    model = MicroAST.from_pretrained(backend="torch", tile_size=0)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda content, *a: calls.append(content.shape[0]) or forward(content, *a))
    contents = sorted(folder.iterdir())

    def jobs(content, out):
        return [Job(content, (STYLES[0],), tmp_path / out / content.name)]

    (tmp_path / "batched").mkdir()
    (tmp_path / "single").mkdir()
    outcomes = list(Stylizer(model, style_size=32).run_batched([(c, jobs(c, "batched"), None) for c in contents]))
    assert sorted(calls) == [1, 3]
    assert [o.job.content.name for o in outcomes if o.error] == ["corrupt.png"]
    stylizer = Stylizer(model, style_size=32)
    for c in contents:
        list(stylizer.run(c, jobs(c, "single")))
    for c in contents[1:]:
        batched = np.asarray(Image.open(tmp_path / "batched" / c.name)).astype(int)
        single = np.asarray(Image.open(tmp_path / "single" / c.name)).astype(int)
        assert np.abs(batched - single).max() <= 1, c.name


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert cli.main(["stylize", str(asset_path("chelsea.png")), "--style", str(STYLES[0]),
                     "-o", str(tmp_path / "out.png"), "--ray"]) == 2
    assert 'pip install "microast-fast[ray]"' in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_one_output_file(local_ray, tmp_path):
    summary = distributed.stylize_images(asset_path("chelsea.png"), STYLES[0], tmp_path / "cat.png",
                                         options=options(), workers=1, progress=False)
    assert summary.written == 1 and (tmp_path / "cat.png").is_file()
    assert summary.manifest == str(tmp_path / distributed.MANIFEST)
