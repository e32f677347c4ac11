"""MicroAST's layers on a tile of a larger map, padding only where the tile meets the image border.

A ``Patch`` is a piece of a feature map at one level of the network (full, half or quarter
resolution): its data, its global origin and the level's full size. Each layer pads by reflection
only on the sides where the patch touches the border of its level (there the model itself pads) and
elsewhere consumes the patch's halo: the patch shrinks as it goes ("valid" convolution). So interior
tiles make no padded copies and spend no work on pixels a later crop would throw away. On a patch
that is the whole map every side is a border, and a layer computes exactly what the reference does.

``TileNet`` holds the weights of the content path in the form that runs fastest on the device. On
the CPU (oneDNN, channels-last, measured on 2 cores at tile size):
- the tail's grouped convolutions (2 input channels a group) and the encoder's stride-2 16->32 run as
  dense convolutions with a block-diagonal weight: 3x faster for the tail's full-resolution 32->16,
  1.2-1.5x for the others, in spite of 16x the FLOPs (oneDNN has no fast kernel for such groups);
- each bilinear x2 + grouped 3x3 of the tail runs as one convolution on the low-resolution map
  (``UpsampleConv``), and the final 9x9 16->3 as a 1x9 16->27 (one output per kernel row) and a 9x1
  27->3 that sums the rows: 1.3x faster, since oneDNN is slow at 3 output channels.
These change only the summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .reference import ConvLayer, ResidualLayer
from .torch_backend import conv_in_halves, featmod_affine


@dataclass(frozen=True)
class Patch:
    """``data [N, C, h, w]`` holds rows ``[y, y + h)`` and columns ``[x, x + w)`` of a level whose full
    size is ``height x width``."""

    data: torch.Tensor
    y: int
    x: int
    height: int
    width: int

    @property
    def y1(self) -> int:
        return self.y + self.data.shape[-2]

    @property
    def x1(self) -> int:
        return self.x + self.data.shape[-1]

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> "Patch":
        if not (self.y <= y0 <= y1 <= self.y1 and self.x <= x0 <= x1 <= self.x1):
            raise AssertionError(f"rows {y0}:{y1}, cols {x0}:{x1} are outside the patch "
                                 f"{self.y}:{self.y1}, {self.x}:{self.x1} (a halo too small)")
        data = self.data[..., y0 - self.y:y1 - self.y, x0 - self.x:x1 - self.x]
        return Patch(data, y0, x0, self.height, self.width)

    def crop_like(self, other: "Patch") -> "Patch":
        return self.crop(other.y, other.y1, other.x, other.x1)


class TileConv:
    """One ``ConvLayer`` (reflection padding + convolution), optionally followed by ReLU, on patches."""

    def __init__(self, layer: ConvLayer, relu: bool = False, dense: bool = False, row_split: bool = False,
                 in_halves: bool = False):
        conv = layer.conv_layer
        self.weight, self.bias = conv.weight, conv.bias
        self.kernel, self.stride, self.groups, self.relu = conv.kernel_size[0], conv.stride[0], conv.groups, relu
        if dense:
            self.weight, self.groups = block_diagonal(self.weight, self.groups), 1
        self.row_split = split_rows(self.weight) if row_split else None
        self.in_halves = in_halves  # the torch backend's residual convolutions on the CPU (conv_in_halves)

    def _conv(self, data: torch.Tensor) -> torch.Tensor:
        if self.in_halves:
            return conv_in_halves(data, self.weight, self.bias)
        if self.row_split is not None:
            rows, select = self.row_split
            return F.conv2d(F.conv2d(data, rows), select, self.bias)
        return F.conv2d(data, self.weight, self.bias, self.stride, groups=self.groups)

    def __call__(self, p: Patch) -> Patch:
        r = self.kernel // 2
        data, y, x = p.data, p.y, p.x
        if self.stride == 2:
            # Output j is centred on input 2j: an interior patch must start on an odd row/column.
            if y > 0 and y % 2 == 0:
                data, y = data[..., 1:, :], y + 1
            if x > 0 and x % 2 == 0:
                data, x = data[..., :, 1:], x + 1
        top, left = (r if y == 0 else 0), (r if x == 0 else 0)
        bottom = r if y + data.shape[-2] == p.height else 0
        right = r if x + data.shape[-1] == p.width else 0
        if top or bottom or left or right:
            data = F.pad(data, (left, right, top, bottom), mode="reflect")
        out = self._conv(data)
        if self.relu:
            out = out.relu_()
        if self.stride == 1:
            return Patch(out, y - top + r, x - left + r, p.height, p.width)
        return Patch(out, (y - top + 1) // 2, (x - left + 1) // 2, -(-p.height // 2), -(-p.width // 2))


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense weight ``[Cout, Cin, k, k]`` of a grouped convolution: zero outside the groups."""
    cout, cin_g = weight.shape[:2]
    per_group = cout // groups
    dense = weight.new_zeros(groups, per_group, groups, cin_g, *weight.shape[2:])
    g = torch.arange(groups, device=weight.device)
    dense[g, :, g] = weight.view(groups, per_group, cin_g, *weight.shape[2:])
    return dense.view(cout, groups * cin_g, *weight.shape[2:])


def split_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``k x k`` convolution as a ``1 x k`` one with an output per (kernel row, channel), then a
    ``k x 1`` one with 0/1 weights that adds kernel row ``dy``'s output shifted by ``dy`` rows."""
    cout, cin, k, _ = weight.shape
    rows = weight.permute(2, 0, 1, 3).reshape(k * cout, cin, 1, k)  # output channel dy * cout + c
    select = weight.new_zeros(cout, k, cout, k)
    c, dy = torch.meshgrid(torch.arange(cout), torch.arange(k), indexing="ij")
    select[c, dy, c, dy] = 1
    return rows, select.view(cout, k * cout, k, 1)


def upsample2(p: Patch) -> Patch:
    """Bilinear x2, align_corners=False. Output row 2i reads input rows i-1 and i, row 2i+1 rows i and
    i+1: at an interior edge the outermost output row would need the row beyond, so it is dropped."""
    data = F.interpolate(p.data, scale_factor=2, mode="bilinear", align_corners=False)
    top, left = int(p.y > 0), int(p.x > 0)
    bottom, right = int(p.y1 < p.height), int(p.x1 < p.width)
    data = data[..., top:data.shape[-2] - bottom, left:data.shape[-1] - right]
    return Patch(data, 2 * p.y + top, 2 * p.x + left, 2 * p.height, 2 * p.width)


# Bilinear x2 (align_corners=False) seen from a 3x3 convolution on the upsampled map: for an output at
# phase ph (row 2i + ph), the weight of low-res row i + a (a = -1, 0, 1; the last index) in the
# upsampled row the kernel tap d (d = -1, 0, 1; the middle index) reads. From u(2j) = h(j-1)/4 + 3h(j)/4
# and u(2j+1) = 3h(j)/4 + h(j+1)/4.
_UPSAMPLE_TAPS = torch.tensor([
    [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25]],  # phase 0: u(2i-1), u(2i), u(2i+1)
    [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]],  # phase 1: u(2i), u(2i+1), u(2i+2)
], dtype=torch.float64)


class UpsampleConv:
    """Bilinear x2 followed by a 3x3 ``ConvLayer`` (and ReLU), as one 3x3 convolution on the low-res map
    with four outputs per channel (one per output phase) and a pixel shuffle: no full-size upsampled
    copy, and the convolution runs on a quarter of the pixels (at the CPU tail's full resolution, 15 ms
    instead of 22 per tile). The low-res map is replicate-padded at the image border, which makes every
    output right but the outermost row or column: those come from the plain layers on a thin strip."""

    def __init__(self, layer: ConvLayer, relu: bool, dense: bool):
        self.plain = TileConv(layer, relu=relu, dense=dense)
        weight = self.plain.weight
        if self.plain.groups != 1:
            weight = block_diagonal(weight, self.plain.groups)
        taps = _UPSAMPLE_TAPS.to(weight.device)
        phases = torch.einsum("oiyx,pya,qxb->opqiab", weight.double(), taps, taps)
        self.weight = phases.reshape(4 * weight.shape[0], weight.shape[1], 3, 3).to(weight.dtype)
        self.bias = self.plain.bias.repeat_interleave(4)
        self.relu = relu

    def __call__(self, p: Patch) -> Patch:
        h, w = p.data.shape[-2:]
        if h < 4 or w < 4:
            return self.plain(upsample2(p))
        top, left = int(p.y == 0), int(p.x == 0)
        bottom, right = int(p.y1 == p.height), int(p.x1 == p.width)
        data = p.data
        if top or bottom or left or right:
            data = F.pad(data, (left, right, top, bottom), mode="replicate")
        out = F.conv2d(data, self.weight, self.bias)
        if self.relu:
            out = out.relu_()
        out = Patch(F.pixel_shuffle(out, 2), 2 * (p.y + 1 - top), 2 * (p.x + 1 - left), 2 * p.height, 2 * p.width)
        # The rows/columns at the image border, where reflection meets the upsampling's clamp.
        strips = [(top, lambda: p.crop(p.y, p.y + 3, p.x, p.x1)), (bottom, lambda: p.crop(p.y1 - 3, p.y1, p.x, p.x1)),
                  (left, lambda: p.crop(p.y, p.y1, p.x, p.x + 3)), (right, lambda: p.crop(p.y, p.y1, p.x1 - 3, p.x1))]
        for edge, (needed, strip) in zip(("top", "bottom", "left", "right"), strips):
            if needed:
                fixed = self.plain(upsample2(strip()))
                ys = {"top": (out.y, out.y + 1), "bottom": (out.y1 - 1, out.y1)}.get(edge, (out.y, out.y1))
                xs = {"left": (out.x, out.x + 1), "right": (out.x1 - 1, out.x1)}.get(edge, (out.x, out.x1))
                out.crop(*ys, *xs).data.copy_(fixed.crop(*ys, *xs).data)
        return out


class TileResidual:
    """``ResidualLayer`` on patches, plain or with FeatMod (as the affine ``a * x + b``) and FilterMod."""

    def __init__(self, layer: ResidualLayer, in_halves: bool = False):
        self.conv1, self.conv2 = TileConv(layer.conv1, in_halves=in_halves), TileConv(layer.conv2, in_halves=in_halves)

    def __call__(self, p: Patch, affine=None, filtermod=None) -> Patch:
        if affine is not None:
            a, b = affine
            p = Patch(torch.addcmul(b.to(p.data.dtype), a.to(p.data.dtype), p.data), p.y, p.x, p.height, p.width)
        if filtermod is None:
            y = self.conv1(p)
            y.data.relu_()
            z = self.conv2(y)
            return Patch(z.data.add_(p.crop_like(z).data), z.y, z.x, z.height, z.width)
        w, b = filtermod
        y = self.conv1(p)  # y2 = w * conv1(x') + b * x', then y3 = relu(y2)
        y.data.mul_(w).add_(b * p.crop_like(y).data).relu_()
        z = self.conv2(y)  # out = x' + w * conv2(y3) + b * y3
        z.data.mul_(w).add_(b * y.crop_like(z).data).add_(p.crop_like(z).data)
        return z


class TileNet:
    """The content path of a ``MicroAST`` module as patch functions: ``encode`` (image -> quarter-res
    64-channel map), ``block1``/``block2`` (the decoder's FilterMod blocks) and ``tail`` (quarter res ->
    image)."""

    def __init__(self, model, device: torch.device):
        cpu = device.type == "cpu"
        enc1 = model.content_encoder.enc1
        # Dense on the CPU: the stride-2 16->32 (1.5x faster); not the stride-2 32->64 (1.2x slower).
        self.head = [TileConv(enc1[0], relu=True), TileConv(enc1[2], relu=True, dense=cpu),
                     TileConv(enc1[4], relu=True), TileConv(enc1[6], relu=True), TileConv(enc1[8], relu=True)]
        self.encoder_blocks = [TileResidual(enc1[10], cpu), TileResidual(model.content_encoder.enc2[0], cpu)]
        self.block1, self.block2 = TileResidual(model.decoder.dec1, cpu), TileResidual(model.decoder.dec2, cpu)
        d3 = model.decoder.dec3
        if cpu:
            self.tail_half = [UpsampleConv(d3[1], relu=True, dense=True), TileConv(d3[3], relu=True)]
            self.tail_full = [UpsampleConv(d3[6], relu=True, dense=True), TileConv(d3[8], relu=True),
                              TileConv(d3[10], row_split=True)]
        else:
            self.tail_half = [upsample2, TileConv(d3[1], relu=True), TileConv(d3[3], relu=True)]
            self.tail_full = [upsample2, TileConv(d3[6], relu=True), TileConv(d3[8], relu=True), TileConv(d3[10])]

    def encode(self, p: Patch) -> Patch:
        # Both stride-2 windows must start on odd rows/columns. An interior image patch starts on a
        # multiple of 4; one image row/column less (inside the halo's slack) makes both start right,
        # where TileConv would otherwise cut a row of the 16-channel full-res map: a copy of it per tile.
        if p.y > 0 and p.y % 2 == 0:
            p = p.crop(p.y + 1, p.y1, p.x, p.x1)
        if p.x > 0 and p.x % 2 == 0:
            p = p.crop(p.y, p.y1, p.x + 1, p.x1)
        for layer in self.head:
            p = layer(p)
        for block in self.encoder_blocks:
            p = block(p)
        return p

    def decoder_block(self, index: int, x_mean, x_std, block_signals, alpha):
        """Decoder block ``index`` (1 or 2), FeatMod from the input's statistics and the style's, as a
        function of a patch (the affine is computed once, not per tile)."""
        s_mean, s_std, w, b = block_signals
        affine = featmod_affine(x_mean, x_std, s_mean, s_std, alpha)
        block = self.block1 if index == 1 else self.block2
        return lambda p: block(p, affine, (w, b))

    def tail(self, p: Patch) -> Patch:
        for layer in self.tail_half + self.tail_full:
            p = layer(p)
        return p
