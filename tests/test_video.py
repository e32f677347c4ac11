"""Video stylisation: the ``video`` command in subprocesses as a user runs it, and the Python API in process.

The clips are made here with PyAV: an odd-sized photo panning, H.264 in yuv444p (odd sizes allowed),
tagged BT.709, with a mono audio track where this PyAV build has an audio encoder."""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av")

from microast_fast import MicroAST, cli, video  # noqa: E402
from microast_fast.images import asset_path, load_image, partial_files, pixels_to_tensor, to_uint8  # noqa: E402

STYLE_SIZE = 128  # small: the style's encoding is not what these tests check
AUDIO_CODEC = next((c for c in ("aac", "libopus", "libmp3lame") if c in av.codecs_available), None)
MODEL_OPTIONS = ["--backend", "torch", "--dtype", "float32", "--device", "cpu", "--style-size", str(STYLE_SIZE)]
PHOTO = np.asarray(Image.open(asset_path("chelsea.png")).convert("RGB"))


def write_clip(path, frames=24, width=45, height=33, rate=24, audio=True, rotation=0, times=None, faststart=False):
    """A photo panning by 2 pixels a frame (x) and 1 (y); ``times`` (seconds) gives irregular frame times.
    ``faststart`` puts the index first, so that a truncated file still opens."""
    time_base = Fraction(1, 12288)
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else None) as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.time_base = stream.codec_context.time_base = time_base
        stream.colorspace = stream.color_primaries = stream.color_trc = 1  # BT.709
        if rotation:
            stream.set_display_rotation(rotation)
        sound = out.add_stream(AUDIO_CODEC, rate=48000, layout="mono") if audio and AUDIO_CODEC else None
        for i in range(frames):
            y, x = 60 + i % 100, 100 + 2 * i % 200
            pixels = np.ascontiguousarray(PHOTO[y:y + height, x:x + width])
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
                format="yuv444p", dst_colorspace="ITU709", dst_color_range="MPEG")
            frame.pts = round((i / rate if times is None else times[i]) / time_base)
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            write_tone(out, sound, seconds=frames / rate)


def write_tone(out, sound, seconds):
    """A 440 Hz tone on the mono audio stream ``sound`` of ``out``."""
    samples = np.sin(np.arange(round(48000 * seconds)) * 2 * np.pi * 440 / 48000).astype(np.float32) * 0.3
    step = sound.codec_context.frame_size or 1024
    for start in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + step], format="flt", layout="mono")
        frame.sample_rate, frame.pts = 48000, start
        out.mux(sound.encode(frame))
    out.mux(sound.encode())


def write_audio_only(path):
    with av.open(str(path), "w", format="mp4") as out:
        write_tone(out, out.add_stream(AUDIO_CODEC, rate=48000, layout="mono"), seconds=0.5)


def decoded_frames(path) -> list:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def audio_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.dts is not None]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255 ** 2 / mse))


def start_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "microast_fast.cli", "video", *map(str, args), *MODEL_OPTIONS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(*args):
    process = start_cli(*args)
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def model():
    return MicroAST.from_pretrained(backend="torch", device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def style():
    """A colourful style: the colour matrix of the encoding matters to the comparison with the model."""
    return asset_path("coffee.png")


@pytest.fixture(scope="module")
def signals(model, style):
    with torch.inference_mode():
        return model.encode_style(load_image(style, STYLE_SIZE))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    write_clip(path)
    return path


def stylized_as_images(model, signals, frames) -> list[np.ndarray]:
    """The frames as the ``stylize`` command stylises images: one at a time, cropped to their size."""
    return [to_uint8(cli.stylize_file(model, pixels_to_tensor(f), signals, 1.0)) for f in frames]


def test_video_command_keeps_frames_size_rate_audio_and_matches_the_model(tmp_path, model, signals, style, clip):
    out = tmp_path / "out.mp4"
    code, stdout, stderr = run_cli(clip, "--style", style, "-o", out, "--crf", "4", "--batch", "5")
    assert code == 0, stderr
    assert f"{out}  46x34  24 frames" in stdout and "model" in stdout and "I/O" in stdout
    with av.open(str(out)) as result, av.open(str(clip)) as source:
        stream = result.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate, stream.frames) == (46, 34, 24, 24)
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
        assert stream.codec_context.colorspace == 1  # BT.709, as the input
        assert [a.codec_context.name for a in result.streams.audio] == [a.codec_context.name
                                                                         for a in source.streams.audio]
    if AUDIO_CODEC:
        assert audio_packets(out) == audio_packets(clip)  # copied, not re-encoded
    inputs = [f.to_ndarray(format="rgb24") for f in decoded_frames(clip)]
    outputs = [f.to_ndarray(format="rgb24")[:33, :45] for f in decoded_frames(out)]
    expected = stylized_as_images(model, signals, inputs)
    assert psnr(np.stack(outputs), np.stack(expected)) >= 35
    assert not partial_files(out)


def test_ctrl_c_leaves_neither_output_nor_partial_file(tmp_path, style):
    clip = tmp_path / "long.mp4"
    write_clip(clip, frames=1000, width=64, height=48, audio=False)  # seconds of work: Ctrl-C comes well before the end
    out = tmp_path / "out" / "long.mp4"
    process = start_cli(clip, "--style", style, "-o", out)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in partial_files(out)):  # the encoder has started writing
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert os.listdir(out.parent) == []


def test_bad_inputs_are_reported_and_the_others_still_run(tmp_path, style, clip):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:len(clip.read_bytes()) // 2])
    inputs = [corrupt, truncated, clip]
    if AUDIO_CODEC:
        inputs.insert(0, tmp_path / "sound.m4a")
        write_audio_only(inputs[0])
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(*inputs, "--style", style, "-o", out)
    assert code == 1
    assert f"{len(inputs) - 1} of {len(inputs)} videos failed" in stderr
    for bad in inputs[:-1]:
        assert f"skipped {bad}: " in stderr
    if AUDIO_CODEC:
        assert "has no video stream (audio)" in stderr
    assert sorted(os.listdir(out)) == ["pan_stylized_coffee.mp4"]
    assert len(decoded_frames(out / "pan_stylized_coffee.mp4")) == 24


def test_stylize_frames_matches_the_model_frame_by_frame(model, signals):
    frames = [np.ascontiguousarray(PHOTO[i:i + 33, 2 * i:2 * i + 45]) for i in range(7)]
    frames.insert(4, np.ascontiguousarray(PHOTO[:21, :30]))  # another size ends a batch early
    result = list(video.stylize_frames(model, iter(frames), signals, batch=3))
    assert [r.shape for r in result] == [f.shape for f in frames] and result[0].dtype == np.uint8
    for got, want in zip(result, stylized_as_images(model, signals, frames)):
        assert np.abs(got.astype(int) - want).max() <= 1  # batched and single convolutions round apart


def test_timing_rotation_and_size_are_kept(tmp_path, model, signals):
    times = [0, 0.05, 0.1, 0.3, 0.35, 0.5, 0.55, 0.6]  # a variable frame rate
    clip = tmp_path / "turned.mp4"
    write_clip(clip, frames=len(times), times=times, rotation=90, audio=False)
    out = tmp_path / "out.mkv"
    summary = video.stylize_video(model, clip, out, signals, batch=3, size=16, progress=False)
    assert (summary["frames"], summary["width"], summary["height"]) == (8, 22, 16)  # 45x33 -> 21.8x16 -> even
    assert summary["fps"] > 0 and summary["model_seconds"] > 0 and summary["io_seconds"] > 0
    frames = decoded_frames(out)
    assert [float(f.time) for f in frames] == pytest.approx(times, abs=1e-3)
    assert frames[0].rotation == 90 and (frames[0].width, frames[0].height) == (22, 16)


def test_unreadable_inputs_raise_video_error_naming_the_file(tmp_path, model, signals, clip):
    corrupt = tmp_path / "noise.mov"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 10)
    with pytest.raises(video.VideoError, match="noise.mov"):
        video.stylize_video(model, corrupt, tmp_path / "out.mp4", signals, progress=False)
    if AUDIO_CODEC:
        sound = tmp_path / "sound.m4a"
        write_audio_only(sound)
        with pytest.raises(video.VideoError, match=r"sound.m4a has no video stream"):
            video.stylize_video(model, sound, tmp_path / "out.mp4", signals, progress=False)
    assert sorted(os.listdir(tmp_path)) == sorted(["noise.mov"] + ["sound.m4a"] * bool(AUDIO_CODEC))


def test_existing_output_is_replaced_only_with_overwrite(tmp_path, model, signals, clip):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        video.stylize_video(model, clip, out, signals, progress=False)
    assert out.read_bytes() == b"keep me"
    video.stylize_video(model, clip, out, signals, overwrite=True, progress=False)
    assert len(decoded_frames(out)) == 24


class FailingModel:
    """The model, failing on its third call: an error in the middle of a video."""

    def __init__(self, model, error):
        self.model, self.error, self.calls = model, error, 0
        self.device, self.dtype = model.device, model.dtype

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 3:
            raise self.error
        return self.model(*args)


@pytest.mark.parametrize("error", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_an_error_midway_stops_every_stage_and_leaves_no_file(tmp_path, model, signals, clip, error):
    threads = threading.active_count()
    out = tmp_path / "out.mp4"
    with pytest.raises(type(error)):
        video.stylize_video(FailingModel(model, error), clip, out, signals, batch=2, progress=False)
    assert os.listdir(tmp_path) == []
    assert threading.active_count() == threads


def video_parser() -> argparse.ArgumentParser:
    """The ``video`` subcommand alone, to run in process."""
    parser = argparse.ArgumentParser()
    video.add_parser(parser.add_subparsers(), cli.add_model_options, cli.load_model, cli.announce)
    return parser


@pytest.mark.parametrize("options, message", [
    (["--codec", "nosuch"], "no encoder 'nosuch'"),
    (["--codec", "png"], "does not take yuv420p"),
    (["-o", "out.avi"], "give an output ending in .mp4"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--style", "missing.png"], "style missing.png is not a file"),
    (["-o", "exists.mp4"], "exists; pass --overwrite"),
])
def test_command_line_mistakes_stop_the_command_before_any_work(tmp_path, monkeypatch, clip, style, options, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.mp4").write_bytes(b"keep me")
    args = video_parser().parse_args(["video", str(clip), "--style", str(style), "-o", "out.mp4", *MODEL_OPTIONS,
                                      *options])
    with pytest.raises(ValueError, match=message):
        args.run(args)
    assert os.listdir(tmp_path) == ["exists.mp4"]


def test_preserve_color_coral_gives_the_style_the_videos_colours(tmp_path, clip):
    """``--preserve-color coral`` recolours the (grey) style to the video's first frame before encoding it."""
    style = asset_path("gravel.png")
    parser = video_parser()
    colour = {}
    for mode in ("coral", None):
        out = tmp_path / f"{mode}.mp4"
        args = parser.parse_args(["video", str(clip), "--style", str(style), "-o", str(out), *MODEL_OPTIONS,
                                  *(["--preserve-color", mode] if mode else [])])
        assert args.run(args) == 0
        colour[mode] = np.mean([f.to_ndarray(format="rgb24") for f in decoded_frames(out)], axis=(0, 1, 2))
    content = np.mean([f.to_ndarray(format="rgb24") for f in decoded_frames(clip)], axis=(0, 1, 2))
    assert np.abs(colour["coral"] - content).max() < np.abs(colour[None] - content).max() / 2


def test_a_truncated_file_that_still_opens_gives_what_it_has_and_a_warning(tmp_path, model, signals):
    clip = tmp_path / "cut.mp4"
    write_clip(clip, frames=48, faststart=True)
    clip.write_bytes(clip.read_bytes()[:clip.stat().st_size * 6 // 10])
    with pytest.warns(UserWarning, match=r"cut.mp4: \d+ of the 48 frames .* may be truncated"):
        summary = video.stylize_video(model, clip, tmp_path / "out.mp4", signals, progress=False)
    assert 0 < summary["frames"] < 48 and len(decoded_frames(tmp_path / "out.mp4")) == summary["frames"]


def test_frames_without_timestamps_are_timed_by_the_frame_rate(tmp_path, model, signals):
    """A raw H.264 stream has no timestamps: the frames are timed from its frame rate as FFmpeg guesses it."""
    raw = tmp_path / "raw.h264"
    write_clip(raw, audio=False)
    with av.open(str(raw)) as source:
        rate = source.streams.video[0].guessed_rate
    video.stylize_video(model, raw, tmp_path / "out.mp4", signals, progress=False)
    assert [float(f.time) for f in decoded_frames(tmp_path / "out.mp4")] == pytest.approx([i / rate for i in range(24)])


@pytest.mark.slow  # a subprocess of several seconds: left out of the fast tier
def test_mixed_styles_and_one_output_a_style(tmp_path, style, clip):
    """--mix 0,1 is the second style's video, frame for frame; without --mix each style has its own output."""
    other = asset_path("gravel.png")
    code, _, stderr = run_cli(clip, "--style", style, "--style", other, "--mix", "0,1", "-o", tmp_path / "mix.mp4")
    assert code == 0, stderr
    code, _, stderr = run_cli(clip, "--style", other, "-o", tmp_path / "alone.mp4")
    assert code == 0, stderr
    mixed, alone = decoded_frames(tmp_path / "mix.mp4"), decoded_frames(tmp_path / "alone.mp4")
    assert len(mixed) == len(alone)
    assert all(np.array_equal(a.to_ndarray(format="rgb24"), b.to_ndarray(format="rgb24")) for a, b in zip(mixed, alone))
    code, _, stderr = run_cli(clip, "--style", style, "--style", other, "-o", tmp_path / "each")
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["pan_stylized_coffee.mp4", "pan_stylized_gravel.mp4"]
