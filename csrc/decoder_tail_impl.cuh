// The decoder tail's kernel bodies as phases of (block, thread); decoder_tail.cu runs them on the
// device, host_emulation.cpp on the host. Two kernels:
//   half:  quarter map [n, h, w, 64] -> half map [n, 2h, 2w, 32]: bilinear x2, grouped (g=32) 3x3 + ReLU,
//          1x1 32->32 + ReLU; one thread per half-res pixel, the upsampled map sampled at each tap.
//   full:  half map -> image [n, 3, 4h, 4w] (NCHW): bilinear x2, grouped (g=16) 3x3 + ReLU, 1x1 16->16 +
//          ReLU into shared memory for a 16x16 output tile and its 4-pixel halo (phase 1), then the
//          9x9 16->3 from there (phase 2). The 16-channel full-resolution map never leaves the block.
// Each level reflects at its own border; weights are the PyTorch layouts, fp32.
#pragma once

#include "dtype_util.cuh"
#include "microast_kernels.h"

namespace microast {
namespace tail {

constexpr int kThreads = 256;
constexpr int kTile = 16;                 // full kernel: output tile side
constexpr int kReach = 4;                 // the 9x9's halo
constexpr int kSpan = kTile + 2 * kReach;  // 24: full-res pixels a side staged in shared memory
constexpr int kF = 16;                     // channels of the full-resolution map

struct Shared {
  float f[kSpan * kSpan * kF];
};

__host__ __device__ inline int tiles_w(int w, int tile) { return (w + tile - 1) / tile; }

// Bilinear x2 (align_corners=False) source of upsampled index o on a level of n: rows i0, i1, weight of i1.
__host__ __device__ inline void up2_source(int o, int n, int& i0, int& i1, float& l1) {
  float src = (o + 0.5f) * 0.5f - 0.5f;
  src = src < 0.f ? 0.f : src;
  i0 = static_cast<int>(src);
  i1 = i0 + (i0 < n - 1 ? 1 : 0);
  l1 = src - static_cast<float>(i0);
}

// relu(1x1(relu(grouped3x3(up2(src))))) at pixel (y, x) of the upsampled level (size 2*sh x 2*sw).
// src [sh, sw, 2 * COUT] in T; grouped weight [COUT][2][3][3]; 1x1 [COUT][COUT]. -> f[COUT]
template <typename T, int COUT>
__host__ __device__ inline void upsample_grouped_1x1(const T* src, int sh, int sw, int y, int x, const float* wg,
                                                     const float* bg, const float* w1, const float* b1, float* f) {
  constexpr int CIN = 2 * COUT;
  const int uh = 2 * sh, uw = 2 * sw;
  float g[COUT];
  for (int co = 0; co < COUT; ++co) g[co] = bg[co];
  for (int tap = 0; tap < 9; ++tap) {
    const int ty = reflect(y + tap / 3 - 1, uh), tx = reflect(x + tap % 3 - 1, uw);
    int y0, y1, x0, x1;
    float ly, lx;
    up2_source(ty, sh, y0, y1, ly);
    up2_source(tx, sw, x0, x1, lx);
    const T* r0 = src + static_cast<long long>(y0) * sw * CIN;
    const T* r1 = src + static_cast<long long>(y1) * sw * CIN;
    for (int c = 0; c < CIN; ++c) {
      const float top = (1.f - lx) * to_float(r0[x0 * CIN + c]) + lx * to_float(r0[x1 * CIN + c]);
      const float bottom = (1.f - lx) * to_float(r1[x0 * CIN + c]) + lx * to_float(r1[x1 * CIN + c]);
      const float u = (1.f - ly) * top + ly * bottom;
      g[c / 2] = fmaf(wg[((c / 2) * 2 + c % 2) * 9 + tap], u, g[c / 2]);
    }
  }
  for (int co = 0; co < COUT; ++co) g[co] = g[co] > 0.f ? g[co] : 0.f;
  for (int co = 0; co < COUT; ++co) {
    float acc = b1[co];
    for (int ci = 0; ci < COUT; ++ci) acc = fmaf(w1[co * COUT + ci], g[ci], acc);
    f[co] = acc > 0.f ? acc : 0.f;
  }
}

// Half kernel, one phase: thread t of block `block` (kThreads half-res pixels a block).
template <typename T>
__host__ __device__ inline void half_pixel(int t, int block, int n, const T* x, int h, int w, const MicroastTailWeights& wt,
                                           T* half) {
  const long long pixel = static_cast<long long>(block) * kThreads + t;
  const int hh = 2 * h, hw = 2 * w;
  if (pixel >= static_cast<long long>(hh) * hw) return;
  const int y = static_cast<int>(pixel / hw), xx = static_cast<int>(pixel % hw);
  float f[32];
  upsample_grouped_1x1<T, 32>(x + static_cast<long long>(n) * h * w * 64, h, w, y, xx, wt.wg1, wt.bg1, wt.w1, wt.b1, f);
  T* o = half + (static_cast<long long>(n) * hh * hw + pixel) * 32;
  for (int c = 0; c < 32; ++c) o[c] = from_float<T>(f[c]);
}

// Full kernel, phase 1, every thread: its share of the 24x24 staged pixels (reflected at the image border
// for the 9x9's padding; rows past an overhanging tile read a valid row, their outputs are not stored).
template <typename T>
__host__ __device__ inline void stage_full(Shared& s, int t, int block, int n, const T* half, int h2, int w2,
                                           const MicroastTailWeights& wt) {
  const int H = 2 * h2, W = 2 * w2;
  const int oy = (block / tiles_w(W, kTile)) * kTile, ox = (block % tiles_w(W, kTile)) * kTile;
  const T* src = half + static_cast<long long>(n) * h2 * w2 * 32;
  for (int i = t; i < kSpan * kSpan; i += kThreads) {
    const int fy = reflect(imin(oy + i / kSpan - kReach, H + kReach - 1), H);
    const int fx = reflect(imin(ox + i % kSpan - kReach, W + kReach - 1), W);
    upsample_grouped_1x1<T, kF>(src, h2, w2, fy, fx, wt.wg2, wt.bg2, wt.w2, wt.b2, s.f + i * kF);
  }
}

// Full kernel, phase 2, every thread: the 9x9 16->3 at one output pixel of the tile.
template <typename T>
__host__ __device__ inline void conv9x9(const Shared& s, int t, int block, int n, int h2, int w2,
                                        const MicroastTailWeights& wt, T* out) {
  const int H = 2 * h2, W = 2 * w2;
  const int oy = (block / tiles_w(W, kTile)) * kTile, ox = (block % tiles_w(W, kTile)) * kTile;
  const int ty = t / kTile, tx = t % kTile;
  if (oy + ty >= H || ox + tx >= W) return;
  float acc[3] = {wt.b9[0], wt.b9[1], wt.b9[2]};
  for (int ky = 0; ky < 9; ++ky) {
    for (int kx = 0; kx < 9; ++kx) {
      const float* f = s.f + ((ty + ky) * kSpan + tx + kx) * kF;
      for (int ci = 0; ci < kF; ++ci) {
        for (int c = 0; c < 3; ++c) acc[c] = fmaf(wt.w9[((c * kF + ci) * 9 + ky) * 9 + kx], f[ci], acc[c]);
      }
    }
  }
  const long long plane = static_cast<long long>(H) * W;
  for (int c = 0; c < 3; ++c) {
    out[(static_cast<long long>(n) * 3 + c) * plane + static_cast<long long>(oy + ty) * W + ox + tx] = from_float<T>(acc[c]);
  }
}

__host__ __device__ inline int half_blocks(int h, int w) {
  return static_cast<int>((4LL * h * w + kThreads - 1) / kThreads);
}
__host__ __device__ inline int full_blocks(int h, int w) {
  return ((4 * h + kTile - 1) / kTile) * tiles_w(4 * w, kTile);
}

}  // namespace tail
}  // namespace microast
