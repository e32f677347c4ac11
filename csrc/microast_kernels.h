// The C interface of the CUDA kernels: raw pointers, sizes and a stream, no torch headers, so that
// every kernel translation unit compiles with plain nvcc on a machine without a CUDA build of torch
// (csrc/check.sh). The binding (binding.cpp) turns tensors into these arguments.
//
// Maps are NHWC with C = 64, in the model's dtype (MICROAST_F32 / F16 / BF16); every accumulation and
// statistic is fp32. Each function returns the launch's cudaError_t.
#pragma once

#include <cuda_runtime.h>

enum MicroastDtype { MICROAST_F32 = 0, MICROAST_F16 = 1, MICROAST_BF16 = 2 };

constexpr int MICROAST_CHANNELS = 64;

// Per-(n, c) mean and sqrt(unbiased variance + eps) of x [n, pixels, 64]: per-chunk Welford partials,
// merged exactly (Chan et al.). ``partials`` is scratch of microast_stats_partials_size(n, pixels) floats.
size_t microast_stats_partials_size(int n, long long pixels);
cudaError_t microast_instance_stats(MicroastDtype dtype, const void* x, int n, long long pixels, float eps,
                                    float* partials, float* mean, float* std, cudaStream_t stream);

// FeatMod + alpha as the affine a * x + b per (n, c), FilterMod signals (w, b) per (n, c): all fp32.
// ``*_batch`` is 1 (broadcast over n) or n. A null x_mean turns FeatMod off, a null filt_w FilterMod.
struct MicroastModulation {
  const float* x_mean;   // [n, 64]
  const float* x_std;    // [n, 64]
  const float* s_mean;   // [style_batch, 64]
  const float* s_std;    // [style_batch, 64]
  int style_batch;
  const float* alpha;    // [alpha_batch]
  int alpha_batch;
  const float* filt_w;   // [filt_batch, 64]
  const float* filt_b;   // [filt_batch, 64]
  int filt_batch;
};

// One residual block (ResidualLayer, plain or FeatMod + FilterMod) on x [n, h, w, 64]:
//   x' = a * x + b (FeatMod, applied on load: it commutes with reflection padding)
//   y3 = relu(w * conv1(x') + b_f * x')      -> scratch [n, h, w, 64]
//   out = x' + w * conv2(y3) + b_f * y3
// (without FilterMod: y3 = relu(conv1(x')), out = x' + conv2(y3)). Convolutions are 3x3 with reflection
// padding by index; weights are packed [9 taps][64 in][64 out] in the map dtype, 16-byte aligned (each
// block copies them as they are, 16 bytes a load), biases [64] fp32. fp32 maps: exact fp32 arithmetic.
// fp16/bf16 maps: tensor cores (sm_80+), x' rounded to the map dtype as an operand, fp32 accumulation
// and epilogue.
cudaError_t microast_resblock(MicroastDtype dtype, const void* x, const void* w1, const float* b1,
                              const void* w2, const float* b2, MicroastModulation mod, int n, int h, int w,
                              void* scratch, void* out, cudaStream_t stream);

// The decoder tail (dec3) from the quarter-res map x [n, h, w, 64] to the image out [n, 3, 4h, 4w]
// (NCHW, x's dtype), one kernel: the 32- and 16-channel maps exist only per tile, in shared memory; the
// 9x9 on the tensor cores for fp16/bf16 maps (sm_80+), exact fp32 for fp32 maps. Weights in
// PyTorch layouts, fp32: grouped 3x3 [32, 2, 3, 3], 1x1 [32, 32] (16-byte aligned), grouped 3x3
// [16, 2, 3, 3], 1x1 [16, 16] (16-byte aligned), 9x9 [3, 16, 9, 9], and their biases; each grouped
// 3x3 also composed with the bilinear x2 before it, per output phase (row and column parity):
// ``wg1_phase`` [4][9][64] and ``wg2_phase`` [4][9][32], fp32, 16-byte aligned (decoder_tail_impl.cuh
// says why); for fp16/bf16 maps also the 9x9 as the tensor cores take it, ``w9_mma``: [81 taps][16 in]
// [16 out] in the map dtype, outputs 3..15 zero, 16-byte aligned (null for fp32 maps).
struct MicroastTailWeights {
  const float *wg1, *bg1, *w1, *b1, *wg2, *bg2, *w2, *b2, *w9, *b9;
  const float *wg1_phase, *wg2_phase;
  const void* w9_mma;
};
cudaError_t microast_decoder_tail(MicroastDtype dtype, const void* x, MicroastTailWeights weights, int n, int h,
                                  int w, void* out, cudaStream_t stream);

// The encoder head (enc1 up to its residual layer) from the image [n, 3, H, W] (NCHW, contiguous) to the
// quarter-res map out [n, ceil(H/4), ceil(W/4), 64], through the half-res map ``half``
// [n, ceil(H/2), ceil(W/2), 32] (scratch); maps in the image's dtype. Weights in PyTorch layouts, fp32:
// 9x9 packed [3 * 81 taps (in, ky, kx)][16 out] and 16-byte aligned (each block copies it as it is),
// grouped 3x3 [32, 1, 3, 3], 1x1 [32, 32], grouped 3x3 [64, 1, 3, 3], 1x1 [64, 64] (16-byte aligned),
// and their biases. For fp16/bf16 maps the 9x9 runs on the tensor cores (sm_80+) from ``w9_mma``: the
// packed 9x9 zero-padded to 256 taps, in the map dtype, [256][16], 16-byte aligned (null for fp32
// maps, whose exact 9x9 reads w9).
struct MicroastHeadWeights {
  const float *w9, *b9, *wg1, *bg1, *w1, *b1, *wg2, *bg2, *w2, *b2;
  const void* w9_mma;
};
cudaError_t microast_encoder_head(MicroastDtype dtype, const void* image, MicroastHeadWeights weights, int n, int h,
                                  int w, void* half, void* out, cudaStream_t stream);
