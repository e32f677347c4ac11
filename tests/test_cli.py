"""The microast-fast command end to end, in subprocesses, as a user runs it."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from microast_fast import MicroAST
from microast_fast.images import asset_path
from microast_fast.images import load_image, to_uint8


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "microast_fast.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture
def photos(tmp_path):
    """A small RGB photo, a grayscale one, a corrupt file and a style, in a folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(asset_path("chelsea.png")).crop((100, 50, 197, 121)).save(folder / "cat.png")
    Image.open(asset_path("gravel.png")).crop((0, 0, 61, 45)).save(folder / "gravel.png")  # mode "L"
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    style = tmp_path / "style.jpg"
    Image.open(asset_path("hubble_deep_field.jpg")).crop((0, 0, 120, 90)).save(style)
    return folder, style


def test_stylize_folder_with_grayscale_and_corrupt_images(photos, tmp_path):
    folder, style = photos
    out = tmp_path / "out"
    result = cli("stylize", folder, "--style", style, "-o", out, "--backend", "torch", "--style-size", "0")
    assert result.returncode == 1, result.stderr  # one input failed: non-zero, after the others ran
    assert "corrupt.jpg" in result.stderr and "1 of 3 outputs failed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["cat_stylized_style.png", "gravel_stylized_style.png"]
    assert "peak RSS" in result.stdout and " s " in result.stdout

    # The file holds exactly what the module computes, cropped to the content's own size.
    model = MicroAST.from_pretrained(backend="torch")
    content, style_tensor = load_image(folder / "cat.png"), load_image(style)
    with torch.inference_mode():
        expected = to_uint8(model(content, style_tensor)[0, :, :71, :97])
    written = np.asarray(Image.open(out / "cat_stylized_style.png"))
    assert written.shape == (71, 97, 3)
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1  # 8-bit rounding of fp32 noise
    gray = Image.open(out / "gravel_stylized_style.png")
    assert gray.mode == "RGB" and gray.size == (61, 45)


def test_single_output_file_alpha_and_resize(photos, tmp_path):
    folder, style = photos
    out = tmp_path / "cat.jpg"
    result = cli("stylize", folder / "cat.png", "--style", style, "-o", out, "--alpha", "0.5", "--size", "40")
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (55, 40)  # shorter side resized to 40
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_never_overwrites(photos, tmp_path):
    folder, style = photos
    result = cli("stylize", folder / "cat.png", "--style", style, "-o", folder / "cat.png", "--overwrite")
    assert result.returncode == 2 and "one of the inputs" in result.stderr
    existing = tmp_path / "taken.png"
    existing.write_bytes(b"keep me")
    result = cli("stylize", folder / "cat.png", "--style", style, "-o", existing)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert existing.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--alpha", "1.5"], r"--alpha must be in \[0, 1\]"),
        (["--backend", "cuda"], "backend 'cuda' is not available"),
        (["--style", "missing.png"], "does not exist"),
        (["--cuda-graphs", "--device", "cpu"], "--cuda-graphs replays CUDA graphs: it needs --device cuda"),
    ],
)
def test_usage_errors(photos, tmp_path, args, message):
    folder, style = photos
    base = ["stylize", folder / "cat.png", "-o", tmp_path / "o.png"]
    result = cli(*base, *(args if "--style" in args else ["--style", style, *args]))
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "o.png").exists()


def test_demo_runs_offline(tmp_path):
    # Any network access would go to a dead proxy and fail: the demo needs only what the package ships.
    env = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "microast_fast.cli", "demo", "-o", "demo.png"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "backend torch (auto on cpu) on cpu, float32"  # what runs, and why
    panel = Image.open(tmp_path / "demo.png")
    assert panel.mode == "RGB" and panel.height == 512
    # The result tiles are stylised: not a copy of the content tile next to them.
    array = np.asarray(panel).astype(int)
    assert array.std() > 10


def test_image_loading_modes(tmp_path):
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    assert torch.equal(load_image(tmp_path / "rgba.png")[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    palette = Image.new("P", (8, 6))
    palette.putpalette([0, 0, 0, 0, 255, 0])
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png")
    assert torch.equal(load_image(tmp_path / "p.png")[0, :, 1, 1], torch.tensor([0.0, 1.0, 0.0]))
    deep = Image.fromarray(np.full((6, 8), 65535 // 2, dtype=np.uint16))
    deep.save(tmp_path / "deep.png")
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.shape == (1, 3, 6, 8) and abs(loaded.mean().item() - 0.5) < 1e-4


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (8, 4), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").shape == (1, 3, 8, 4)


@pytest.mark.slow  # a subprocess of several seconds: left out of the fast tier
@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_streamed_output_is_the_module_output(photos, tmp_path, suffix):
    """With tiles, PNG and TIFF are written band by band from an 8-bit input; every format holds exactly
    what the module computes with the same tiles, and the whole-image model to within one 8-bit step at
    rounding boundaries."""
    folder, style = photos
    content_path = tmp_path / "wide.png"
    Image.open(asset_path("chelsea.png")).crop((10, 20, 213, 118)).save(content_path)  # 203x98: odd, not /4
    out = tmp_path / f"out{suffix}"
    result = cli("stylize", content_path, "--style", style, "-o", out, "--backend", "torch", "--tile-size", "5",
                 "--style-size", "0")
    assert result.returncode == 0, result.stderr
    written = np.asarray(Image.open(out).convert("RGB"))
    content, style_tensor = load_image(content_path), load_image(style)
    with torch.inference_mode():
        tiled = to_uint8(MicroAST.from_pretrained(backend="torch", tile_size=5)(content, style_tensor)[0, :, :98, :203])
        whole = to_uint8(MicroAST.from_pretrained(backend="torch", tile_size=0)(content, style_tensor)[0, :, :98, :203])
    np.testing.assert_array_equal(written, tiled)
    assert np.abs(written.astype(int) - whole).max() <= 1


def test_budget_too_small_refuses_before_any_work(photos, tmp_path):
    folder, style = photos
    out = tmp_path / "out"
    result = cli("stylize", folder / "cat.png", folder / "gravel.png", "--style", style, "-o", out,
                 "--backend", "torch", "--max-memory", "2MB")
    assert result.returncode == 2
    assert "cannot be stylised within the budget" in result.stderr and "raise the budget" in result.stderr
    assert not out.exists() or not any(out.iterdir())
    assert "backend" not in result.stderr  # refused before the model ran


def test_failed_stream_leaves_no_file(tmp_path):
    from microast_fast.images import save_bands_atomic

    def bands():
        yield np.zeros((4, 10, 3), np.uint8)
        raise RuntimeError("the computation failed half-way")

    for suffix in (".png", ".tif", ".jpg"):
        with pytest.raises(RuntimeError, match="half-way"):
            save_bands_atomic(bands(), 8, 10, tmp_path / f"x{suffix}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device, dtype", [("cpu", "float32"), ("cuda", "float16"), ("cuda:1", "float16")])
def test_default_dtype_follows_the_device(device, dtype):
    from microast_fast.cli import build_parser, default_dtype

    assert build_parser().parse_args(["demo", "--device", device]).dtype == "auto"
    assert default_dtype(device) == dtype


def test_warmup_prepares_each_size(capsys):
    from microast_fast.cli import main

    assert main(["warmup", "--size", "24", "--size", "20x28", "--style-size", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["24 (24x24)", "20x28 (28x20)"]
    assert all("first call" in line for line in lines)


def test_outputs_get_the_mode_of_a_normal_write_and_leftovers_go(photos, tmp_path):
    """Outputs are readable as any file the user writes (umask, not mkstemp's 0600), and the hidden
    temporary that a killed run leaves beside an output is removed by the next run."""
    folder, style = photos
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / ".cat_stylized_style.png.abc123.partial"
    leftover.write_bytes(b"half an image")
    unrelated = out / ".notes.txt.abc123.partial"
    unrelated.write_bytes(b"someone else's")
    old_umask = os.umask(0o022)
    try:
        result = cli("stylize", folder / "cat.png", "--style", style, "-o", out, "--backend", "torch")
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stderr
    assert (out / "cat_stylized_style.png").stat().st_mode & 0o777 == 0o644
    assert not leftover.exists() and unrelated.exists()


@pytest.mark.parametrize("mode", ["coral", "luminance"])
def test_preserve_color_is_the_module_option(photos, tmp_path, mode):
    folder, style = photos
    out = tmp_path / f"{mode}.png"
    result = cli("stylize", folder / "cat.png", "--style", style, "--style-size", "32", "-o", out,
                 "--backend", "torch", "--preserve-color", mode)
    assert result.returncode == 0, result.stderr
    model = MicroAST.from_pretrained(backend="torch", preserve_color=mode)
    content = load_image(folder / "cat.png")
    with torch.inference_mode():
        expected = model(content, load_image(style, 32))[0, :, :content.shape[2], :content.shape[3]]
    assert np.array_equal(np.asarray(Image.open(out)), to_uint8(expected))
