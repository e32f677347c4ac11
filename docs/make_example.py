"""The README's example of the style controls, from the bundled images and weights (offline, seconds):

    python docs/make_example.py            # writes docs/style_controls.jpg

One row: content | style A | style B | A alone | a 50/50 mix of A and B | the mix, colour-preserved
(coral) | the mix, luminance only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from microast_fast import MicroAST, StyleSignals
from microast_fast.images import asset_path, load_image, save_image_atomic, to_uint8

CONTENT, STYLE_A, STYLE_B = "chelsea.png", "hubble_deep_field.jpg", "gravel.png"
HEIGHT = 200


def tile(image: torch.Tensor, label: str) -> Image.Image:
    picture = Image.fromarray(to_uint8(image[0] if image.dim() == 4 else image))
    picture = picture.resize((round(picture.width * HEIGHT / picture.height), HEIGHT), Image.Resampling.LANCZOS)
    ImageDraw.Draw(picture).text((6, HEIGHT - 16), label, fill="white", stroke_width=2, stroke_fill="black")
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("style_controls.jpg"))
    args = parser.parse_args()
    content = load_image(asset_path(CONTENT), 384)
    style_a, style_b = (load_image(asset_path(name), 256) for name in (STYLE_A, STYLE_B))
    plain = MicroAST.from_pretrained(backend="torch")
    tiles = [tile(content, "content"), tile(style_a, "style A"), tile(style_b, "style B")]
    with torch.inference_mode():
        a, b = plain.encode_style(style_a), plain.encode_style(style_b)
        h, w = content.shape[-2:]
        tiles.append(tile(plain(content, a)[..., :h, :w], "A"))
        tiles.append(tile(plain(content, StyleSignals.mix([a, b], [0.5, 0.5]))[..., :h, :w], "50/50 mix"))
        for mode in ("coral", "luminance"):
            model = MicroAST.from_pretrained(backend="torch", preserve_color=mode)
            mixed = StyleSignals.mix([model.encode_style(s, content=content) for s in (style_a, style_b)], [0.5, 0.5])
            tiles.append(tile(model(content, mixed)[..., :h, :w], f"mix, {mode}"))
    row = Image.new("RGB", (sum(t.width for t in tiles), HEIGHT))
    x = 0
    for t in tiles:
        row.paste(t, (x, 0))
        x += t.width
    save_image_atomic(row, args.output)
    print(f"wrote {args.output} ({row.width}x{row.height})")


if __name__ == "__main__":
    main()
