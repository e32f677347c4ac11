"""The "torch" backend's layers: the spec's fused algebra in plain, differentiable PyTorch, on whole
maps and on tiles.

Against the reference they change the arithmetic, not the model:
- FeatMod and the alpha blend become one per-(n, c) affine ``A * x + B`` from exact fp32 statistics,
  so the normalised map and the blend temporaries never exist;
- FilterMod is an epilogue on each convolution's output (``addcmul``), not separate passes;
- on the CPU, fp32 residual 3x3s sum two convolutions over half the input channels (``conv_in_halves``).
Every whole-map op is differentiable (in-place ops only on temporaries that no backward needs).

The tile layers (``TileConv``, ``UpsampleConv``, ``TileResidual``) run on a ``streaming.Patch``: each pads
by reflection only on the sides where the patch touches the border of its level (there the model itself
pads) and elsewhere consumes the patch's halo, so the patch shrinks as it goes ("valid" convolution):
interior tiles make no padded copies and spend no work on pixels a later crop would throw away. On a
patch that is the whole map every side is a border, and a layer computes exactly what the reference
does. On the CPU they take the forms oneDNN runs fastest (``torch_backend.TorchTileStages``); those
change only the summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reference import FEATMOD_EPS, ConvLayer, Encoder, ResidualLayer
from ..streaming import Patch
from ..weight_packing import block_diagonal, up2_phase_weights


def instance_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(n, c) mean and ``sqrt(unbiased var + eps)``, accumulated in fp32 for half inputs."""
    acc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    var, mean = torch.var_mean(acc, dim=(2, 3), keepdim=True, correction=1)
    return mean, (var + FEATMOD_EPS).sqrt()


def featmod_affine(x_mean, x_std, s_mean, s_std, alpha) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha * FeatMod(x) + (1 - alpha) * x == A * x + B``, per (n, c)."""
    ratio = s_std / x_std
    a = alpha * ratio + (1 - alpha)
    b = alpha * (s_mean - x_mean * ratio)
    return a, b


def conv_in_halves(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv2d(x, weight, bias)`` as two convolutions over half the input channels each, summed.
    oneDNN's channels-last 3x3 sums all 576 products of an output in one fp32 chain, too far from
    float64 for the spec's rule; halves of the chain meet it at the same speed (docs/streaming.md).
    fp32 maps only: half maps would round each partial to their dtype."""
    if x.dtype != torch.float32:
        return F.conv2d(x, weight, bias)
    half = x.shape[1] // 2
    out = F.conv2d(x[:, :half], weight[:, :half], bias)
    return out.add_(F.conv2d(x[:, half:], weight[:, half:]))


def residual_conv(layer: ConvLayer, x: torch.Tensor) -> torch.Tensor:
    """A residual block's 64->64 ``ConvLayer``: in halves where the maps are channels-last."""
    if conv_memory_format(x.device) != torch.channels_last:
        return layer(x)
    x = F.pad(x, (layer.padding,) * 4, mode="reflect")
    return conv_in_halves(x, layer.conv_layer.weight, layer.conv_layer.bias)


def residual_block(block: ResidualLayer, x: torch.Tensor) -> torch.Tensor:
    """An encoder's ``x + conv2(relu(conv1(x)))``."""
    return residual_conv(block.conv2, residual_conv(block.conv1, x).relu_()).add_(x)


def encode(encoder: Encoder, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``encoder(image)``: ``(f0, f1)``, its residual blocks through ``residual_conv``."""
    f0 = residual_block(encoder.enc1[10], encoder.enc1[:10](conv_layout(image)))
    return f0, residual_block(encoder.enc2[0], f0)


def filtermod_resblock(block: ResidualLayer, x, a, b, w, bias_signal) -> torch.Tensor:
    """One decoder block on ``x' = a * x + b`` (FeatMod + alpha), returning ``x' + w*conv2(y3) + bias*y3``."""
    x = torch.addcmul(b.to(x.dtype), a.to(x.dtype), x)
    y = torch.addcmul(bias_signal * x, w, residual_conv(block.conv1, x))  # y2 = w * conv1(x') + b * x'
    y = y.relu_()  # y3
    out = torch.addcmul(bias_signal * y, w, residual_conv(block.conv2, y))  # y5
    return out.add_(x)


def conv_memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on the CPU: oneDNN's convolutions with 1-16 channels and its grouped convolutions
    run about 1.45x faster end to end in NHWC (measured at 1920x1080, 2 cores); every later map
    inherits the layout from the first convolution."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def conv_layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=conv_memory_format(x.device))


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
        phases = up2_phase_weights(weight).permute(2, 0, 1, 3, 4, 5)  # [out, row phase, column phase, in, 3, 3]
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
