// The encoder head's kernel bodies as phases of (block, thread); encoder_head.cu runs them on the
// device, host_emulation.cpp on the host. Two kernels:
//   half:    image [n, 3, H, W] (NCHW) -> half map [n, H2, W2, 32]: for an 8-row x 7-column tile of
//            half-res outputs, phase 0 stages the weights of the 9x9 (packed [tap][out] by the
//            caller) and of the 1x1 ([in][out]) in shared memory; phase 1 computes relu(9x9 3->16) on the 17x15 full-res
//            pixels the stride-2 windows read, one thread a pixel (255 of the 256 threads: an 8x8 tile
//            would need 289, two rounds with the second nearly idle), into shared memory (the
//            16-channel full-res map never leaves the block); phase 2 the grouped (g=16) stride-2 3x3
//            16->32 + ReLU of the tile's 56 pixels, also into shared memory; phase 3 the 1x1 32->32 +
//            ReLU. Phases 2 and 3 spread the tile's 56 x 32 values over all threads, consecutive
//            threads on consecutive channels (coalesced stores).
//   quarter: half map -> quarter map [n, H4, W4, 64], one thread a pixel: grouped (g=32) stride-2 3x3
//            32->64 + ReLU, 1x1 64->64 + ReLU.
// Each level reflects at its own border (H2 = ceil(H/2), H4 = ceil(H2/2)); weights are the PyTorch
// layouts, fp32.
#pragma once

#include "dtype_util.cuh"
#include "microast_kernels.h"

namespace microast {
namespace head {

constexpr int kThreads = 256;
constexpr int kTileH = 8, kTileW = 7;     // half kernel: half-res output tile
constexpr int kTilePixels = kTileH * kTileW;
constexpr int kSpanH = 2 * kTileH + 1;    // full-res rows and columns read by the stride-2 windows
constexpr int kSpanW = 2 * kTileW + 1;
static_assert(kSpanH * kSpanW <= kThreads, "phase 1 computes one staged pixel a thread");
constexpr int kF = 16;                    // channels of the full-resolution map
constexpr int kH = 32;                    // channels of the half-resolution map
constexpr int kHStride = kH + 1;          // g and w1t rows: a transposing store hits 32 distinct banks
constexpr int kTaps9 = 3 * 81;            // inputs of one 9x9 output: 3 channels x 9 x 9

struct Shared {
  alignas(16) float w9t[kTaps9 * kF];  // the 9x9's weights, [in channel][ky][kx][out]: 16-byte rows
  float f[kSpanH * kSpanW * kF];       // relu(9x9) at the staged full-res pixels
  float g[kTilePixels * kHStride];     // relu(grouped 3x3) at the tile's half-res pixels
  float w1t[kH * kHStride];            // the 1x1's weights transposed, [in][out]
};

__host__ __device__ inline int half_size(int n) { return (n + 1) / 2; }
__host__ __device__ inline int tiles_w(int w) { return (half_size(w) + kTileW - 1) / kTileW; }
__host__ __device__ inline int half_blocks(int h, int w) { return ((half_size(h) + kTileH - 1) / kTileH) * tiles_w(w); }
__host__ __device__ inline int quarter_blocks(int h, int w) {
  return (half_size(half_size(h)) * half_size(half_size(w)) + kThreads - 1) / kThreads;
}

// Half kernel, phase 0, every thread: the 9x9's packed weights [in][ky][kx][out], copied 16 bytes a load
// (the 16 outputs of one input are then four 16-byte shared loads, the same for every thread:
// broadcast), and the 1x1's [out][in] -> [in][out].
__host__ __device__ inline void stage_weights(Shared& s, int t, const MicroastHeadWeights& wt) {
  for (int i = t; i < kTaps9 * kF / 4; i += kThreads) copy16(s.w9t + 4 * i, wt.w9 + 4 * i);
  for (int i = t; i < kH * kH; i += kThreads) s.w1t[(i % kH) * kHStride + i / kH] = wt.w1[i];
}

// Half kernel, phase 1, threads 0..254: relu(9x9 3->16 + bias) at one staged pixel.
template <typename T>
__host__ __device__ inline void stage_full(Shared& s, int t, int block, int n, const T* image, int H, int W,
                                           const MicroastHeadWeights& wt) {
  if (t >= kSpanH * kSpanW) return;
  const int j0 = (block / tiles_w(W)) * kTileH, i0 = (block % tiles_w(W)) * kTileW;
  const T* img = image + static_cast<long long>(n) * 3 * H * W;
  // the stride-2 windows' reflection at the full-res border (rows past an overhanging tile are clamped)
  const int fy = reflect(imin(2 * j0 - 1 + t / kSpanW, H), H), fx = reflect(imin(2 * i0 - 1 + t % kSpanW, W), W);
  float acc[kF];
#pragma unroll
  for (int c = 0; c < kF; ++c) acc[c] = wt.b9[c];
  for (int ci = 0; ci < 3; ++ci) {
    for (int ky = 0; ky < 9; ++ky) {
      const T* row = img + (static_cast<long long>(ci) * H + reflect(fy + ky - 4, H)) * W;
      for (int kx = 0; kx < 9; ++kx) {
        const float v = to_float(row[reflect(fx + kx - 4, W)]);
        const float4* w = reinterpret_cast<const float4*>(s.w9t + ((ci * 9 + ky) * 9 + kx) * kF);
#pragma unroll
        for (int q = 0; q < kF / 4; ++q) {
          const float4 wq = w[q];
          acc[4 * q] = fmaf(wq.x, v, acc[4 * q]);
          acc[4 * q + 1] = fmaf(wq.y, v, acc[4 * q + 1]);
          acc[4 * q + 2] = fmaf(wq.z, v, acc[4 * q + 2]);
          acc[4 * q + 3] = fmaf(wq.w, v, acc[4 * q + 3]);
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kF; ++c) s.f[t * kF + c] = acc[c] > 0.f ? acc[c] : 0.f;
}

// Half kernel, phase 2, every thread: relu(grouped stride-2 3x3 16->32) at (pixel, channel) pairs of
// the tile (a warp: one pixel's 32 channels). Pixels past the map's edge compute unused values.
__host__ __device__ inline void half_grouped(Shared& s, int t, const MicroastHeadWeights& wt) {
  for (int i = t; i < kTilePixels * kH; i += kThreads) {
    const int p = i / kH, co = i % kH;
    const int ly = 2 * (p / kTileW), lx = 2 * (p % kTileW);  // the window's top-left in the staged pixels
    float acc = wt.bg1[co];
    for (int tap = 0; tap < 9; ++tap) {
      acc = fmaf(wt.wg1[co * 9 + tap], s.f[((ly + tap / 3) * kSpanW + lx + tap % 3) * kF + co / 2], acc);
    }
    s.g[p * kHStride + co] = acc > 0.f ? acc : 0.f;
  }
}

// Half kernel, phase 3, every thread: relu(1x1 32->32) at (pixel, channel) pairs of the tile, stored.
template <typename T>
__host__ __device__ inline void half_pixel(const Shared& s, int t, int block, int n, int H, int W,
                                           const MicroastHeadWeights& wt, T* half) {
  const int H2 = half_size(H), W2 = half_size(W);
  for (int i = t; i < kTilePixels * kH; i += kThreads) {
    const int p = i / kH, co = i % kH;
    const int j = (block / tiles_w(W)) * kTileH + p / kTileW, x = (block % tiles_w(W)) * kTileW + p % kTileW;
    if (j >= H2 || x >= W2) continue;
    float acc = wt.b1[co];
    for (int ci = 0; ci < kH; ++ci) acc = fmaf(s.w1t[ci * kHStride + co], s.g[p * kHStride + ci], acc);
    half[((static_cast<long long>(n) * H2 + j) * W2 + x) * kH + co] = from_float<T>(acc > 0.f ? acc : 0.f);
  }
}

// Quarter kernel, one phase: thread t of block `block`, one quarter-res pixel.
template <typename T>
__host__ __device__ inline void quarter_pixel(int t, int block, int n, const T* half, int H, int W,
                                              const MicroastHeadWeights& wt, T* out) {
  const int H2 = half_size(H), W2 = half_size(W), H4 = half_size(H2), W4 = half_size(W2);
  const long long pixel = static_cast<long long>(block) * kThreads + t;
  if (pixel >= static_cast<long long>(H4) * W4) return;
  const int j = static_cast<int>(pixel / W4), i = static_cast<int>(pixel % W4);
  const T* src = half + static_cast<long long>(n) * H2 * W2 * 32;
  float g[64];
  for (int co = 0; co < 64; ++co) g[co] = wt.bg2[co];
  for (int tap = 0; tap < 9; ++tap) {
    const int y = reflect(2 * j + tap / 3 - 1, H2), x = reflect(2 * i + tap % 3 - 1, W2);
    const T* v = src + (static_cast<long long>(y) * W2 + x) * 32;
    for (int co = 0; co < 64; ++co) g[co] = fmaf(wt.wg2[co * 9 + tap], to_float(v[co / 2]), g[co]);
  }
  for (int co = 0; co < 64; ++co) g[co] = g[co] > 0.f ? g[co] : 0.f;
  T* o = out + (static_cast<long long>(n) * H4 * W4 + pixel) * 64;
  for (int co = 0; co < 64; ++co) {
    float acc = wt.b2[co];
#pragma unroll
    for (int q = 0; q < 16; ++q) {  // the row's weights 16 bytes a load (the binding checks the alignment)
      const float4 w = load4(wt.w2 + co * 64 + 4 * q);
      acc = fmaf(w.x, g[4 * q], acc);
      acc = fmaf(w.y, g[4 * q + 1], acc);
      acc = fmaf(w.z, g[4 * q + 2], acc);
      acc = fmaf(w.w, g[4 * q + 3], acc);
    }
    o[co] = from_float<T>(acc > 0.f ? acc : 0.f);
  }
}

}  // namespace head
}  // namespace microast
