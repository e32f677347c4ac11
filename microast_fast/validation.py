"""Input checks: a wrong input gets an error that says what to do, never a wrong image."""

from __future__ import annotations

import math

import torch

from .signals import StyleSignals

# Reflection padding of 4 (the 9x9 convolutions) needs each side longer than 4.
MIN_SIDE = 5


def check_image(name: str, x) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor [N, 3, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        hint = f" For one image use {name}.unsqueeze(0)." if x.dim() == 3 else ""
        raise ValueError(f"{name} must be 4-D [N, 3, H, W], got shape {tuple(x.shape)}.{hint}")
    if x.shape[1] != 3:
        raise ValueError(
            f"{name} must have 3 (RGB) channels in dim 1, got shape {tuple(x.shape)}. "
            "Convert grayscale with x.expand(-1, 3, -1, -1), drop alpha with x[:, :3], "
            "and use [N, C, H, W] order (x.permute(0, 3, 1, 2) for [N, H, W, C])."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    check_size(name, x.shape[2], x.shape[3])
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; MicroAST takes floating-point images with values in [0, 1]. "
            f"Convert 8-bit images with {name}.float() / 255 (bool masks with {name}.float())."
        )


def check_model_match(name: str, x: torch.Tensor, param: torch.Tensor) -> None:
    if x.device != param.device:
        raise ValueError(f"{name} is on {x.device} but the model is on {param.device}; call model.to({name}.device)")
    if x.dtype != param.dtype:
        raise TypeError(
            f"{name} is {x.dtype} but the model's weights are {param.dtype}; "
            f"use {name}.to({param.dtype}) or model.to({x.dtype})"
        )


def check_pair(content: torch.Tensor, style) -> None:
    n = content.shape[0]
    if isinstance(style, StyleSignals):
        where, s = style.device, style.batch_size
    else:
        where, s = style.device, style.shape[0]
    if where != content.device:
        raise ValueError(f"content is on {content.device} but style is on {where}; move both to one device")
    if s not in (1, n):
        raise ValueError(
            f"content batch is {n} but style batch is {s}; give one style per content image or a single style "
            "(batch 1) to apply to all"
        )


def normalize_alpha(alpha, n: int, device: torch.device):
    """A float in [0, 1] stays a float; a tensor of 1 or N values becomes ``[N or 1, 1, 1, 1]`` in fp32
    (float64 stays float64: the statistics it meets are fp32 or better)."""
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) or torch.is_tensor(alpha)):
        raise TypeError(f"alpha must be a float in [0, 1] or a tensor of {n} such floats, got {type(alpha).__name__}")
    if not torch.is_tensor(alpha):
        alpha = float(alpha)
        if math.isnan(alpha) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (0 keeps the content, 1 is full style), got {alpha}")
        return alpha
    if alpha.is_complex() or alpha.dtype == torch.bool:
        raise TypeError(f"alpha must be real-valued, got dtype {alpha.dtype}")
    if alpha.dim() > 1 or alpha.numel() not in (1, n):
        raise ValueError(f"alpha must be a float or a tensor of 1 or {n} values (one per sample), got shape {tuple(alpha.shape)}")
    values = alpha.detach().float()
    if torch.isnan(values).any() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"every alpha must be in [0, 1] (no NaN), got {values.tolist()}")
    dtype = torch.float64 if alpha.dtype == torch.float64 else torch.float32
    return alpha.to(device=device, dtype=dtype).reshape(-1, 1, 1, 1)


def check_size(name: str, h: int, w: int) -> None:
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"{name} is {h}x{w}; MicroAST needs at least {MIN_SIDE}x{MIN_SIDE} pixels "
            "(its 9x9 reflection padding). Upscale the image first."
        )
