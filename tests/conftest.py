"""Shared test set-up. On a machine without CUDA the Triton kernels run in Triton's CPU interpreter,
which must be chosen before triton is first imported."""

import os
import sys

import torch

if not torch.cuda.is_available():
    assert "triton" not in sys.modules or os.environ.get("TRITON_INTERPRET") == "1", \
        "triton was imported before TRITON_INTERPRET could be set"
    os.environ.setdefault("TRITON_INTERPRET", "1")


# fp32 means fp32 in every comparison: cuDNN convolutions default to TF32 on Ampere and later, which
# would put the *reference* (and the style path) off by about 1e-3 against the 1e-4 contract.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
