"""Triton kernels of microast-fast, installed as ``microast_fast.kernels``.

One file per fused stage, each with its kernels, their launcher and a ``torch.library.custom_op``
(namespace ``microast``) with a fake implementation, so ``torch.compile`` traces through them:

- ``encoder_head``: image -> quarter-res 64-channel map (``microast::encoder_head``)
- ``filtermod_resblock``: the 64-channel residual block, plain or FeatMod + FilterMod, with the next
  FeatMod's statistics from its epilogue (``microast::filtermod_resblock``; the exact statistics
  merge is in ``instance_stats``)
- ``modulator_pool``: the Modulator's depthwise conv + global average pool (``microast::modulator_pool``,
  and in two passes ``microast::modulator_pool_split``)
- ``decoder_tail``: quarter-res 64-channel map -> output image (``microast::decoder_tail``)
- ``decoder_tail_banded``: the same in row bands through three plain kernels
  (``microast::decoder_tail_banded``; variant "triton+banded-tail")

Maps between kernels are NHWC (``[N, H, W, 64]``), in the model's dtype; accumulation and statistics
are fp32. The ops take the model's weights packed by ``microast_fast.weight_packing``; nothing here
imports from the package above. Importing this package imports triton: on a machine without CUDA set
``TRITON_INTERPRET=1`` first (the kernels then run in Triton's CPU interpreter, for testing).
"""

# Importing the modules registers their ops in torch.ops.microast.
from . import decoder_tail, decoder_tail_banded, encoder_head, filtermod_resblock, modulator_pool  # noqa: F401
