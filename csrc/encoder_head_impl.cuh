// The encoder head's kernel bodies as phases of (block, thread); encoder_head.cu runs them on the
// device, host_emulation.cpp on the host. Two kernels:
//   half:    image [n, 3, H, W] (NCHW) -> half map [n, H2, W2, 32]: for an 8x8 tile of half-res outputs,
//            phase 1 stages relu(9x9 3->16) on the 17x17 full-res pixels the stride-2 windows read
//            (shared memory; the 16-channel full-res map never leaves the block); phase 2, one
//            thread a pixel: grouped (g=16) stride-2 3x3 16->32 + ReLU, 1x1 32->32 + ReLU.
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
constexpr int kTile = 8;                // half kernel: half-res output tile side
constexpr int kSpan = 2 * kTile + 1;    // 17 full-res pixels a side read by the stride-2 windows
constexpr int kF = 16;                  // channels of the full-resolution map

struct Shared {
  float f[kSpan * kSpan * kF];
};

__host__ __device__ inline int half_size(int n) { return (n + 1) / 2; }
__host__ __device__ inline int tiles_w(int w) { return (half_size(w) + kTile - 1) / kTile; }
__host__ __device__ inline int half_blocks(int h, int w) { return ((half_size(h) + kTile - 1) / kTile) * tiles_w(w); }
__host__ __device__ inline int quarter_blocks(int h, int w) {
  return (half_size(half_size(h)) * half_size(half_size(w)) + kThreads - 1) / kThreads;
}

// Half kernel, phase 1, every thread: relu(9x9 3->16 + bias) at its share of the staged pixels.
template <typename T>
__host__ __device__ inline void stage_full(Shared& s, int t, int block, int n, const T* image, int H, int W,
                                           const MicroastHeadWeights& wt) {
  const int j0 = (block / tiles_w(W)) * kTile, i0 = (block % tiles_w(W)) * kTile;
  const T* img = image + static_cast<long long>(n) * 3 * H * W;
  for (int p = t; p < kSpan * kSpan; p += kThreads) {
    // the stride-2 windows' reflection at the full-res border (rows past an overhanging tile are clamped)
    const int fy = reflect(imin(2 * j0 - 1 + p / kSpan, H), H), fx = reflect(imin(2 * i0 - 1 + p % kSpan, W), W);
    float acc[kF];
    for (int c = 0; c < kF; ++c) acc[c] = wt.b9[c];
    for (int ci = 0; ci < 3; ++ci) {
      for (int ky = 0; ky < 9; ++ky) {
        const T* row = img + (static_cast<long long>(ci) * H + reflect(fy + ky - 4, H)) * W;
        for (int kx = 0; kx < 9; ++kx) {
          const float v = to_float(row[reflect(fx + kx - 4, W)]);
          for (int c = 0; c < kF; ++c) acc[c] = fmaf(wt.w9[((c * 3 + ci) * 9 + ky) * 9 + kx], v, acc[c]);
        }
      }
    }
    for (int c = 0; c < kF; ++c) s.f[p * kF + c] = acc[c] > 0.f ? acc[c] : 0.f;
  }
}

// Half kernel, phase 2, threads 0..63: one half-res pixel of the tile.
template <typename T>
__host__ __device__ inline void half_pixel(const Shared& s, int t, int block, int n, int H, int W,
                                           const MicroastHeadWeights& wt, T* half) {
  if (t >= kTile * kTile) return;
  const int H2 = half_size(H), W2 = half_size(W);
  const int j = (block / tiles_w(W)) * kTile + t / kTile, i = (block % tiles_w(W)) * kTile + t % kTile;
  if (j >= H2 || i >= W2) return;
  const int ly = 2 * (t / kTile), lx = 2 * (t % kTile);  // the window's top-left in the staged pixels
  float g[32];
  for (int co = 0; co < 32; ++co) {
    float acc = wt.bg1[co];
    for (int tap = 0; tap < 9; ++tap) {
      acc = fmaf(wt.wg1[co * 9 + tap], s.f[((ly + tap / 3) * kSpan + lx + tap % 3) * kF + co / 2], acc);
    }
    g[co] = acc > 0.f ? acc : 0.f;
  }
  T* o = half + ((static_cast<long long>(n) * H2 + j) * W2 + i) * 32;
  for (int co = 0; co < 32; ++co) {
    float acc = wt.b1[co];
    for (int ci = 0; ci < 32; ++ci) acc = fmaf(wt.w1[co * 32 + ci], g[ci], acc);
    o[co] = from_float<T>(acc > 0.f ? acc : 0.f);
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
    for (int ci = 0; ci < 64; ++ci) acc = fmaf(wt.w2[co * 64 + ci], g[ci], acc);
    o[co] = from_float<T>(acc > 0.f ? acc : 0.f);
  }
}

}  // namespace head
}  // namespace microast
