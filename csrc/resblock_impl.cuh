// The residual-block kernel's body in three phases, each a function of (block, thread): resblock.cu
// runs them as one kernel with barriers between; host_emulation.cpp runs them on the host, thread
// by thread, so that the indexing and arithmetic are tested without a GPU.
//
// A block computes an 8x8 pixel tile for all 64 output channels: the reflected 10x10x64 input tile
// sits in shared memory (row stride 65 floats, so the 32 pixels a warp reads fall in 32 banks), each
// thread accumulates 16 output channels of one pixel in fp32, and the packed weights [tap][in][out]
// stream through the read-only cache (a warp's threads read the same weights: broadcast loads).
#pragma once

#include "dtype_util.cuh"
#include "microast_kernels.h"

namespace microast {
namespace resblock {

constexpr int kTile = 8;                       // output tile side
constexpr int kHalo = kTile + 2;               // input tile side
constexpr int kStride = MICROAST_CHANNELS + 1;  // padded channel stride in shared memory
constexpr int kThreads = 256;                  // 64 pixels x 4 groups of 16 output channels
constexpr int kOutPerThread = 16;

struct Shared {
  float tile[kHalo * kHalo * kStride];
  float affine_a[MICROAST_CHANNELS], affine_b[MICROAST_CHANNELS];
  float filt_w[MICROAST_CHANNELS], filt_b[MICROAST_CHANNELS];
};

__host__ __device__ inline int blocks_w(int w) { return (w + kTile - 1) / kTile; }
__host__ __device__ inline int blocks(int h, int w) { return ((h + kTile - 1) / kTile) * blocks_w(w); }

// Phase 1, threads 0..63: channel t's FeatMod affine and FilterMod pair for sample n.
__host__ __device__ inline void load_signals(Shared& s, int t, int n, const MicroastModulation& mod) {
  float a = 1.f, b = 0.f;
  if (mod.x_mean != nullptr) {  // alpha * FeatMod(x) + (1 - alpha) * x == a * x + b
    const int si = (mod.style_batch == 1 ? 0 : n) * MICROAST_CHANNELS + t, i = n * MICROAST_CHANNELS + t;
    const float alpha = mod.alpha[mod.alpha_batch == 1 ? 0 : n];
    const float ratio = mod.s_std[si] / mod.x_std[i];
    a = alpha * ratio + (1.f - alpha);
    b = alpha * (mod.s_mean[si] - mod.x_mean[i] * ratio);
  }
  s.affine_a[t] = a;
  s.affine_b[t] = b;
  const bool filtermod = mod.filt_w != nullptr;
  const int f = (mod.filt_batch == 1 ? 0 : n) * MICROAST_CHANNELS + t;
  s.filt_w[t] = filtermod ? mod.filt_w[f] : 1.f;
  s.filt_b[t] = filtermod ? mod.filt_b[f] : 0.f;
}

// Phase 2, every thread: its share of the input tile with a 1-pixel halo, reflected at the map border
// (rows/columns past the border of an overhanging tile read a valid row; their outputs are not stored).
// conv1 reads x' = a * x + b (FeatMod on load: it commutes with reflection); conv2 reads y3 as stored.
template <typename T, bool kSecond>
__host__ __device__ inline void load_tile(Shared& s, int t, int block, int n, const T* in, int h, int w) {
  const int y0 = (block / blocks_w(w)) * kTile, x0 = (block % blocks_w(w)) * kTile;
  const T* src = in + static_cast<long long>(n) * h * w * MICROAST_CHANNELS;
  for (int i = t; i < kHalo * kHalo * MICROAST_CHANNELS; i += kThreads) {
    const int c = i % MICROAST_CHANNELS, p = i / MICROAST_CHANNELS;
    const int gy = reflect(imin(y0 + p / kHalo - 1, h), h), gx = reflect(imin(x0 + p % kHalo - 1, w), w);
    float v = to_float(src[(static_cast<long long>(gy) * w + gx) * MICROAST_CHANNELS + c]);
    if (!kSecond) v = s.affine_a[c] * v + s.affine_b[c];
    s.tile[p * kStride + c] = v;
  }
}

// Phase 3, every thread: 16 output channels of one pixel, and the epilogue:
//   conv1: y3 = relu(w * conv1(x') + b * x');   conv2: out = x' + w * conv2(y3) + b * y3.
template <typename T, bool kSecond>
__host__ __device__ inline void convolve(const Shared& s, int t, int block, int n, const T* block_input,
                                         const float* weight, const float* bias, int h, int w, T* out) {
  const int y0 = (block / blocks_w(w)) * kTile, x0 = (block % blocks_w(w)) * kTile;
  const int pixel = t % (kTile * kTile), group = t / (kTile * kTile);
  const int oy = pixel / kTile, ox = pixel % kTile;
  const int co0 = group * kOutPerThread;
  float acc[kOutPerThread];
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) acc[j] = bias[co0 + j];
  for (int tap = 0; tap < 9; ++tap) {
    const float* window = s.tile + ((oy + tap / 3) * kHalo + ox + tap % 3) * kStride;
    const float* taps = weight + tap * MICROAST_CHANNELS * MICROAST_CHANNELS + co0;
    for (int ci = 0; ci < MICROAST_CHANNELS; ++ci) {
      const float v = window[ci];
#pragma unroll
      for (int q = 0; q < kOutPerThread / 4; ++q) {
        const float4 wq = load4(taps + ci * MICROAST_CHANNELS + 4 * q);
        acc[4 * q] = fmaf(v, wq.x, acc[4 * q]);
        acc[4 * q + 1] = fmaf(v, wq.y, acc[4 * q + 1]);
        acc[4 * q + 2] = fmaf(v, wq.z, acc[4 * q + 2]);
        acc[4 * q + 3] = fmaf(v, wq.w, acc[4 * q + 3]);
      }
    }
  }
  const int gy = y0 + oy, gx = x0 + ox;
  if (gy >= h || gx >= w) return;
  const long long o = (static_cast<long long>(n) * h * w + static_cast<long long>(gy) * w + gx) * MICROAST_CHANNELS + co0;
  const float* centre = s.tile + ((oy + 1) * kHalo + ox + 1) * kStride;  // this conv's input at the pixel
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) {
    const int co = co0 + j;
    float y = s.filt_w[co] * acc[j] + s.filt_b[co] * centre[co];  // FilterMod (identity without signals)
    if (kSecond) {
      y += s.affine_a[co] * to_float(block_input[o + j]) + s.affine_b[co];  // + x'
    } else {
      y = y > 0.f ? y : 0.f;
    }
    out[o + j] = from_float<T>(y);
  }
}

}  // namespace resblock
}  // namespace microast
