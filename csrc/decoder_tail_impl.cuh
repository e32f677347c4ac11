// The decoder tail's kernel body as phases of (block, thread); decoder_tail.cu runs them as one kernel,
// host_emulation.cpp on the host. A block makes a 16-row x 32-column tile of the image [n, 3, 4h, 4w]
// (NCHW) from the quarter map [n, h, w, 64]; neither intermediate map leaves the block:
//   phase 1: the half-res window the tile reads (14x22 pixels: the 9x9's halo, the full-res 3x3 tap and
//            the bilinear pair, see half_window), bilinear x2, grouped (g=32) 3x3 + ReLU, 1x1 32->32 +
//            ReLU, into shared memory in the map dtype (as the reference rounds it);
//   phase 2: the tile and the 9x9's 4-pixel halo at full res (24x40): bilinear x2 of the window, grouped
//            (g=16) 3x3 + ReLU, 1x1 16->16 + ReLU, into shared memory in the map dtype;
//   phase 3: the 9x9 16->3: exact fp32, a thread per output pixel, for fp32 maps; on the tensor cores
//            (WMMA, fp32 accumulation; below) for fp16/bf16 maps.
// The upsampled maps never exist: each bilinear x2 + grouped 3x3 is one 3x3 on the level below per
// output phase (upsample_grouped_1x1). Each level reflects at its own border; weights are the PyTorch
// layouts and the composed ones, fp32. Windows overlap: phase 1 computes 308 / 128 = 2.4x the half-res
// pixels, phase 2 960 / 512 = 1.9x the full-res ones (a 16x16 tile: 3.1x and 2.25x).
#pragma once

#include <cassert>

#include "dtype_util.cuh"
#include "microast_kernels.h"
#include "warp_mma.cuh"

namespace microast {
namespace tail {

// 16 x 32 output tiles and 16 warps: the window (14 x 22 = 308 pixels) and the staged full-res pixels
// (24 x 40 = 960) take one and two rounds of 512 threads, that is 1 / 512 and 2 / 512 rounds an output
// pixel, where a 16 x 16 tile on 256 threads takes 1 / 256 and 3 / 256: the halos' recomputation
// shrinks with the tile. One block an SM (128 registers a thread, what phase 1 needs), 16 warps.
constexpr int kThreads = 512;
constexpr int kTileH = 16, kTileW = 32;   // output tile
constexpr int kReach = 4;                 // the 9x9's halo
constexpr int kSpanH = kTileH + 2 * kReach, kSpanW = kTileW + 2 * kReach;  // full-res pixels staged
constexpr int kF = 16;                     // channels of the full-resolution map
constexpr int kH = 32;                     // channels of the half-resolution map
// Half-res pixels a side of the window: full-res rows oy - 5 .. oy + kTileH + 4 (the 9x9's halo, then
// the 3x3 tap; reflected rows stay inside) read half-res rows floor(r / 2 - 1/4) and one more.
constexpr int kWinH = kTileH / 2 + 6, kWinW = kTileW / 2 + 6;
static_assert(kWinH * kWinW <= kThreads, "phase 1 computes the window in one round");
static_assert(kTileH * kTileW == kThreads, "phase 3 gives each thread one output pixel");
// Window elements per pixel: 4 past kH keeps each pixel's channels 8-byte (fp16/bf16) or 16-byte (fp32)
// aligned for load4_float, and puts the pixels of 16 (or 8) consecutive threads' loads on distinct banks.
constexpr int kHStride = kH + 4;

constexpr int kTaps9 = 81;    // taps of the 9x9
constexpr int kWarps = kThreads / 32;
constexpr int kFrags = kTileH * kTileW / warp_mma::kSide;  // the tensor-core 9x9's 16-pixel row pieces

// The tensor-core 9x9's weights (fp16/bf16 maps): per tap a 16x16 B operand [ci][out] in the map dtype
// (outputs 3..15 zero: the MMA's N is 16).
template <typename T>
struct Conv9x9Weights {
  alignas(32) T w9[kTaps9 * kF * kF];
};
template <>
struct Conv9x9Weights<float> {};  // fp32 maps: the exact 9x9 reads its weights from global memory

template <typename T>
struct Shared {
  union {
    alignas(16) T window[kWinH * kWinW * kHStride];  // phases 1-2: the half-res window
    alignas(32) float out[kTileH * kTileW * kF];      // phase 3, fp16/bf16: the 9x9's accumulators
  };
  alignas(32) T f[kSpanH * kSpanW * kF];  // the full-res 16-channel tile and halo; 32-byte pixels (WMMA)
  Conv9x9Weights<T> mma;
};

// 103.3 KB in fp32, 102.5 KB in fp16/bf16: dynamic shared memory (decoder_tail.cu opts in), within the
// 163 KB a block may use on sm_80.
static_assert(sizeof(Shared<float>) <= 163 * 1024 && sizeof(Shared<__half>) <= 163 * 1024,
              "the decoder tail's shared memory exceeds sm_80's per-block limit");

// First half-res row (column) of the window of the tile starting at full-res row (column) o.
__host__ __device__ inline int half_window(int o) { return (o - kReach - 2 > 0 ? o - kReach - 2 : 0) / 2; }

// An NHWC level, or the window of it held from pixel (y0, x0): rows x row_pixels pixels of
// pixel_stride elements. The host emulation checks every read against the window's bounds.
template <typename T>
struct LevelView {
  const T* p;
  int y0, x0, rows, row_pixels, pixel_stride;
  __host__ __device__ const T* at(int y, int x) const {
#ifndef __CUDA_ARCH__
    assert(y >= y0 && y < y0 + rows && x >= x0 && x < x0 + row_pixels);
#endif
    return p + (static_cast<long long>(y - y0) * row_pixels + (x - x0)) * pixel_stride;
  }
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

// g[COUT] += grouped3x3(up2(src)) at pixel (y, x) of the upsampled level, each tap sampled bilinearly
// at its reflected coordinate: the general form, for the level's border pixels.
template <typename T, int COUT>
__host__ __device__ inline void bilinear_grouped(const LevelView<T>& src, int sh, int sw, int y, int x,
                                                 const float* wg, float* g) {
  constexpr int CIN = 2 * COUT;
  const int uh = 2 * sh, uw = 2 * sw;
  for (int tap = 0; tap < 9; ++tap) {
    const int ty = reflect(y + tap / 3 - 1, uh), tx = reflect(x + tap % 3 - 1, uw);
    int y0, y1, x0, x1;
    float ly, lx;
    up2_source(ty, sh, y0, y1, ly);
    up2_source(tx, sw, x0, x1, lx);
    const T *p00 = src.at(y0, x0), *p01 = src.at(y0, x1), *p10 = src.at(y1, x0), *p11 = src.at(y1, x1);
    #pragma unroll
    for (int c = 0; c < CIN; ++c) {
      const float top = (1.f - lx) * to_float(p00[c]) + lx * to_float(p01[c]);
      const float bottom = (1.f - lx) * to_float(p10[c]) + lx * to_float(p11[c]);
      const float u = (1.f - ly) * top + ly * bottom;
      g[c / 2] = fmaf(wg[((c / 2) * 2 + c % 2) * 9 + tap], u, g[c / 2]);
    }
  }
}

// relu(1x1(relu(grouped3x3(up2(src))))) at pixel (y, x) of the upsampled level (size 2*sh x 2*sw).
// src: the sh x sw level below (2 * COUT channels, T, each pixel's aligned for load4_float), or the
// window of it that the taps read; grouped weight [COUT][2][3][3], and the same composed with the
// bilinear x2 per output phase (wp, below); 1x1 [COUT][COUT], 16-byte aligned. -> f[COUT]
//
// Away from the upsampled level's border, bilinear x2 (align_corners=False) has fixed weights per
// output parity (an even row 2i is 0.25 x[i-1] + 0.75 x[i], an odd one 0.75 x[i] + 0.25 x[i+1], with
// the source clamped at the edge), so the 3x3 taps of the grouped convolution on the upsampled level
// are a 3x3 convolution of the level below with one kernel per (row, column) parity: ``wp``
// [4 phases (2 * row parity + column parity)][9 taps over rows i-1..i+1, columns j-1..j+1][CIN] fp32,
// 16-byte aligned (compose_up2_grouped3x3). A pixel then reads 9 source pixels instead of 36 and does
// no interpolation. The first and last upsampled rows and columns reflect the 3x3's padding at the
// upsampled level, which no such kernel expresses: they sample each tap bilinearly, as the reference.
template <typename T, int COUT>
__host__ __device__ inline void upsample_grouped_1x1(const LevelView<T>& src, int sh, int sw, int y, int x,
                                                     const float* wg, const float* wp, const float* bg,
                                                     const float* w1, const float* b1, float* f) {
  constexpr int CIN = 2 * COUT;
  const int uh = 2 * sh, uw = 2 * sw;
  float g[COUT];
  #pragma unroll
  for (int co = 0; co < COUT; ++co) g[co] = bg[co];
  if (y > 0 && y < uh - 1 && x > 0 && x < uw - 1) {
    const int i = y / 2, j = x / 2;
    const float* w = wp + ((y % 2) * 2 + x % 2) * 9 * CIN;
    for (int tap = 0; tap < 9; ++tap) {
      const int sy = i + tap / 3 - 1, sx = j + tap % 3 - 1;
      const T* p = src.at(sy < 0 ? 0 : imin(sy, sh - 1), sx < 0 ? 0 : imin(sx, sw - 1));
      #pragma unroll
      for (int c = 0; c < CIN; c += 4) {  // input channels c, c + 1 feed group c / 2, c + 2, c + 3 the next
        const float4 wq = load4(w + tap * CIN + c), v = load4_float(p + c);
        g[c / 2] = fmaf(wq.x, v.x, g[c / 2]);
        g[c / 2] = fmaf(wq.y, v.y, g[c / 2]);
        g[c / 2 + 1] = fmaf(wq.z, v.z, g[c / 2 + 1]);
        g[c / 2 + 1] = fmaf(wq.w, v.w, g[c / 2 + 1]);
      }
    }
  } else {
    bilinear_grouped<T, COUT>(src, sh, sw, y, x, wg, g);
  }
  #pragma unroll
  for (int co = 0; co < COUT; ++co) g[co] = g[co] > 0.f ? g[co] : 0.f;
  #pragma unroll
  for (int co = 0; co < COUT; ++co) {
    float acc = b1[co];
    #pragma unroll
    for (int ci = 0; ci < COUT; ci += 4) {
      const float4 wq = load4(w1 + co * COUT + ci);
      acc = fmaf(wq.x, g[ci], acc);
      acc = fmaf(wq.y, g[ci + 1], acc);
      acc = fmaf(wq.z, g[ci + 2], acc);
      acc = fmaf(wq.w, g[ci + 3], acc);
    }
    f[co] = acc > 0.f ? acc : 0.f;
  }
}

__host__ __device__ inline int tile_y0(int block, int W) { return (block / tiles_w(W, kTileW)) * kTileH; }
__host__ __device__ inline int tile_x0(int block, int W) { return (block % tiles_w(W, kTileW)) * kTileW; }

// Phase 1, every thread: its share of the half-res window. Window pixels past the map's edge (an
// overhanging tile's) are never read and not computed.
template <typename T>
__host__ __device__ inline void stage_half(Shared<T>& s, int t, int block, int n, const T* x, int h, int w,
                                           const MicroastTailWeights& wt) {
  const int hy0 = half_window(tile_y0(block, 4 * w)), hx0 = half_window(tile_x0(block, 4 * w));
  const LevelView<T> quarter{x + static_cast<long long>(n) * h * w * 64, 0, 0, h, w, 64};
  for (int i = t; i < kWinH * kWinW; i += kThreads) {
    const int y = hy0 + i / kWinW, xx = hx0 + i % kWinW;
    if (y >= 2 * h || xx >= 2 * w) continue;
    float f[kH];
    upsample_grouped_1x1<T, kH>(quarter, h, w, y, xx, wt.wg1, wt.wg1_phase, wt.bg1, wt.w1, wt.b1, f);
    #pragma unroll
    for (int c = 0; c < kH; ++c) s.window[i * kHStride + c] = from_float<T>(f[c]);
  }
}

// Phase 2, every thread: its share of the 24x40 staged full-res pixels (reflected at the image border
// for the 9x9's padding; rows past an overhanging tile read a valid row, their outputs are not stored),
// from the window.
template <typename T>
__host__ __device__ inline void stage_full(Shared<T>& s, int t, int block, int h2, int w2, const MicroastTailWeights& wt) {
  const int H = 2 * h2, W = 2 * w2;
  const int oy = tile_y0(block, W), ox = tile_x0(block, W);
  const LevelView<T> window{s.window, half_window(oy), half_window(ox), kWinH, kWinW, kHStride};
  for (int i = t; i < kSpanH * kSpanW; i += kThreads) {
    const int fy = reflect(imin(oy + i / kSpanW - kReach, H + kReach - 1), H);
    const int fx = reflect(imin(ox + i % kSpanW - kReach, W + kReach - 1), W);
    float f[kF];
    upsample_grouped_1x1<T, kF>(window, h2, w2, fy, fx, wt.wg2, wt.wg2_phase, wt.bg2, wt.w2, wt.b2, f);
#pragma unroll
    for (int c = 0; c < kF; ++c) s.f[i * kF + c] = from_float<T>(f[c]);  // in the map dtype, as the reference
  }
}

// Phase 3 (fp32 maps), every thread: the 9x9 16->3 at its output pixel of the tile, exact fp32.
template <typename T>
__host__ __device__ inline void conv9x9(const Shared<T>& s, int t, int block, int n, int h2, int w2,
                                        const MicroastTailWeights& wt, T* out) {
  const int H = 2 * h2, W = 2 * w2;
  const int oy = tile_y0(block, W), ox = tile_x0(block, W);
  const int ty = t / kTileW, tx = t % kTileW;
  if (oy + ty >= H || ox + tx >= W) return;
  // A fresh partial per kernel row (144 products), then the nine rows and the bias: one FMA chain of
  // 1296 rounded several times further from the exact sum than PyTorch's convolution.
  float acc[3] = {0.f, 0.f, 0.f};
  for (int ky = 0; ky < 9; ++ky) {
    float row[3] = {0.f, 0.f, 0.f};
    for (int kx = 0; kx < 9; ++kx) {
      const T* f = s.f + ((ty + ky) * kSpanW + tx + kx) * kF;
      for (int ci = 0; ci < kF; ++ci) {
        for (int c = 0; c < 3; ++c) row[c] = fmaf(wt.w9[((c * kF + ci) * 9 + ky) * 9 + kx], to_float(f[ci]), row[c]);
      }
    }
    for (int c = 0; c < 3; ++c) acc[c] += row[c];
  }
  for (int c = 0; c < 3; ++c) acc[c] += wt.b9[c];
  const long long plane = static_cast<long long>(H) * W;
  for (int c = 0; c < 3; ++c) {
    out[(static_cast<long long>(n) * 3 + c) * plane + static_cast<long long>(oy + ty) * W + ox + tx] = from_float<T>(acc[c]);
  }
}

// The tensor-core 9x9 (fp16/bf16 maps), three phases. An implicit GEMM with no im2col copy: for the 16
// output pixels of a row piece (row r, columns c0 .. c0 + 15) and kernel row ky, the pixels' 9 taps x 16
// channels are consecutive in ``f`` (pixel-major), so tap kx's A operand [16 pixels][16 channels] starts
// c0 + kx pixels into row r + ky, leading dimension 16; B is the tap's [16 in][16 out] weights. 81
// products per piece, fp32 accumulation.
//
// Phase 0, every thread (before phase 1): the weights, packed [tap][ci][out] in T by the caller
// (``w9_mma``), copied 16 bytes a load.
template <typename T>
__host__ __device__ inline void load_conv9x9_weights(Shared<T>& s, int t, const MicroastTailWeights& wt) {
  constexpr int kPieces = kTaps9 * kF * kF * sizeof(T) / 16, kPerPiece = 16 / sizeof(T);
  const T* src = static_cast<const T*>(wt.w9_mma);
#pragma unroll 2  // fully unrolled, the ten 16-byte loads in flight spill registers
  for (int i = t; i < kPieces; i += kThreads) copy16(s.mma.w9 + i * kPerPiece, src + i * kPerPiece);
}

// Phase 3a, every warp: row pieces warp and warp + 16 of the tile's 32, accumulators to shared memory
// (over the window, which phase 2 has finished reading).
template <typename T>
__host__ __device__ inline void conv9x9_multiply(Shared<T>& s, int warp) {
  for (int frag = warp; frag < kFrags; frag += kWarps) {
    const int r = frag / (kTileW / warp_mma::kSide), c0 = frag % (kTileW / warp_mma::kSide) * warp_mma::kSide;
    warp_mma::Accumulator acc;
    warp_mma::zero(acc);
    for (int ky = 0; ky < 9; ++ky) {
      const T* row = s.f + ((r + ky) * kSpanW + c0) * kF;
      for (int kx = 0; kx < 9; ++kx) {
        warp_mma::OperandA<T> a;
        warp_mma::OperandB<T> b;
        warp_mma::load(a, row + kx * kF, kF);
        warp_mma::load(b, s.mma.w9 + (ky * 9 + kx) * kF * kF, kF);
        warp_mma::multiply_add(acc, a, b);
      }
    }
    warp_mma::store(s.out + (r * kTileW + c0) * kF, acc, kF);
  }
}

// Phase 3b, every thread: bias and store of its output pixel's 3 channels.
template <typename T>
__host__ __device__ inline void conv9x9_store(const Shared<T>& s, int t, int block, int n, int h2, int w2,
                                              const MicroastTailWeights& wt, T* out) {
  const int H = 2 * h2, W = 2 * w2;
  const int oy = tile_y0(block, W), ox = tile_x0(block, W);
  const int ty = t / kTileW, tx = t % kTileW;
  if (oy + ty >= H || ox + tx >= W) return;
  const long long plane = static_cast<long long>(H) * W;
  for (int c = 0; c < 3; ++c) {
    out[(static_cast<long long>(n) * 3 + c) * plane + static_cast<long long>(oy + ty) * W + ox + tx] =
        from_float<T>(s.out[t * kF + c] + wt.b9[c]);
  }
}

__host__ __device__ inline int blocks(int h, int w) {
  return ((4 * h + kTileH - 1) / kTileH) * tiles_w(4 * w, kTileW);
}

}  // namespace tail
}  // namespace microast
