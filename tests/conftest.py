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


TIERS = ("interpreter", "aot", "host_emulation")


def pytest_collection_modifyitems(config, items):
    """Tests that run CUDA kernel bodies on the host get ``host_emulation``; every test of a kernel
    tier (seconds each on a CPU) is also ``slow``, so ``pytest -m "not slow"`` is the edit-run loop."""
    for item in items:
        if "emulation" in item.fixturenames:
            item.add_marker("host_emulation")
        if any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker("slow")
