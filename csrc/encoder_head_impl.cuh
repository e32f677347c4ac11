// The encoder head's kernel bodies as phases of (block, thread); encoder_head.cu runs them on the
// device, host_emulation.cpp on the host. Two kernels:
//   half:    image [n, 3, H, W] (NCHW) -> half map [n, H2, W2, 32], a block per 8-row x 7-column tile of
//            half-res outputs. Phase 1 computes relu(9x9 3->16) at the 17x15 full-res pixels the
//            stride-2 windows read (255 pixels: an 8x8 tile would need 289, two rounds with the second
//            nearly idle) into shared memory: the 16-channel full-res map never leaves the block.
//              fp32 maps: exact fp32, one thread a pixel, weights [in][ky][kx][out] staged in shared memory.
//              fp16/bf16 maps: on the tensor cores as an implicit GEMM [255 pixels x 256 k] x [256 k x 16]
//              with k = (in, ky, kx) (243 taps, zero-padded): the image tile is staged once, each warp
//              gathers its own 32 pixels' im2col rows 16 columns at a time and multiplies them. Image
//              and weights (a model in the map dtype) are exact as operands and accumulation is fp32,
//              so this is the fp32 path's arithmetic in another order, with the tensor cores doing the
//              3,888 FMA a pixel that are most of the head's work.
//            Phase 2 is the grouped (g=16) stride-2 3x3 16->32 + ReLU of the tile's 56 pixels, also into
//            shared memory; phase 3 the 1x1 32->32 + ReLU, stored. Phases 2 and 3 spread the tile's
//            56 x 32 values over all threads, consecutive threads on consecutive channels (coalesced
//            stores).
//   quarter: half map -> quarter map [n, H4, W4, 64], one thread a pixel: grouped (g=32) stride-2 3x3
//            32->64 + ReLU, 1x1 64->64 + ReLU.
// Each level reflects at its own border (H2 = ceil(H/2), H4 = ceil(H2/2)); weights are fp32, as
// microast_kernels.h lays them out, and for fp16/bf16 maps also the 9x9 in the map dtype (w9_mma).
#pragma once

#include <type_traits>

#include "dtype_util.cuh"
#include "microast_kernels.h"
#include "warp_mma.cuh"

namespace microast {
namespace head {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTileH = 8, kTileW = 7;     // half kernel: half-res output tile
constexpr int kTilePixels = kTileH * kTileW;
constexpr int kSpanH = 2 * kTileH + 1;    // full-res rows and columns read by the stride-2 windows
constexpr int kSpanW = 2 * kTileW + 1;
constexpr int kSpanPixels = kSpanH * kSpanW;
static_assert(kSpanPixels <= kThreads, "phase 1 computes one staged pixel a thread");
constexpr int kF = 16;                    // channels of the full-resolution map
constexpr int kH = 32;                    // channels of the half-resolution map
constexpr int kHStride = kH + 1;          // g and w1t rows: a transposing store hits 32 distinct banks
constexpr int kTaps9 = 3 * 81;            // inputs of one 9x9 output: 3 channels x 9 x 9

// The tensor-core 9x9 (fp16/bf16 maps).
constexpr int kReach = 4;                       // the 9x9's halo
constexpr int kImageH = kSpanH + 2 * kReach;    // 25 x 23 image pixels feed the staged ones
constexpr int kImageW = kSpanW + 2 * kReach;
constexpr int kK = 256;                         // kTaps9, zero-padded to whole products
constexpr int kKChunk = warp_mma::kSide;        // im2col columns gathered per product
constexpr int kChunks = kK / kKChunk;
constexpr int kWarpRows = 32;                   // a warp's im2col rows: its own lanes' pixels
// A rows 24 elements (48 bytes) apart: a multiple of 8 elements (WMMA), and the 16-byte stores of 8
// consecutive lanes hit 8 distinct 4-bank groups.
constexpr int kRowPitch = kKChunk + 8;
static_assert(kTaps9 <= kK && kK % kKChunk == 0, "k must pad to whole products");

// Phases 2 and 3: the half-res tile and the 1x1's weights, the same for every map dtype.
struct HalfLevel {
  float g[kTilePixels * kHStride];  // relu(grouped 3x3) at the tile's half-res pixels
  float w1t[kH * kHStride];         // the 1x1's weights transposed, [in][out]
};

// fp32 maps: 42.5 KB.
struct ExactShared {
  alignas(16) float w9t[kTaps9 * kF];  // the 9x9's weights, [in channel][ky][kx][out]: 16-byte rows
  float f[kSpanPixels * kF];           // relu(9x9) at the staged full-res pixels
  HalfLevel half;
};

// fp16/bf16 maps: 38.7 KB.
template <typename T>
struct MmaShared {
  alignas(32) T w9[kK * kF];       // the 9x9's B operand [k][out]
  T image[3 * kImageH * kImageW];  // the image pixels the staged ones read, reflected
  // Each warp's 2 KB holds its im2col rows while it multiplies, then the accumulators of the same 32
  // pixels: f, [pixel][16] over the whole block (the warps' rows in order).
  union Fine {
    alignas(32) float f[kThreads * kF];
    T rows[kWarps][kWarpRows * kF * sizeof(float) / sizeof(T)];
  } fine;
  HalfLevel half;
};
static_assert(kWarpRows * kRowPitch * sizeof(__half) <= kWarpRows * kF * sizeof(float), "a warp's im2col rows fit its 2 KB");
static_assert(sizeof(ExactShared) <= 48 * 1024 && sizeof(MmaShared<__half>) <= 48 * 1024,
              "the encoder head's shared memory is static: at most 48 KB");

template <typename T>
using Shared = std::conditional_t<std::is_same_v<T, float>, ExactShared, MmaShared<T>>;

__host__ __device__ inline int half_size(int n) { return (n + 1) / 2; }
__host__ __device__ inline int tiles_w(int w) { return (half_size(w) + kTileW - 1) / kTileW; }
__host__ __device__ inline int half_blocks(int h, int w) { return ((half_size(h) + kTileH - 1) / kTileH) * tiles_w(w); }
__host__ __device__ inline int quarter_blocks(int h, int w) {
  return (half_size(half_size(h)) * half_size(half_size(w)) + kThreads - 1) / kThreads;
}
// The tile's first half-res row and column.
__host__ __device__ inline int tile_y0(int block, int w) { return (block / tiles_w(w)) * kTileH; }
__host__ __device__ inline int tile_x0(int block, int w) { return (block % tiles_w(w)) * kTileW; }

// The full-res row (column) of staged pixel row (column) r of a tile starting at half-res row j0: the
// stride-2 windows' reflection at the full-res border (rows past an overhanging tile are clamped).
__host__ __device__ inline int staged_row(int j0, int r, int n) { return reflect(imin(2 * j0 - 1 + r, n), n); }

// Half kernel, phase 0, every thread: the 1x1's weights [out][in] -> [in][out].
__host__ __device__ inline void stage_w1(HalfLevel& s, int t, const MicroastHeadWeights& wt) {
  for (int i = t; i < kH * kH; i += kThreads) s.w1t[(i % kH) * kHStride + i / kH] = wt.w1[i];
}

// --- fp32 maps: the exact 9x9 ---------------------------------------------------------------------

// Phase 0, every thread: the 9x9's packed weights [in][ky][kx][out], copied 16 bytes a load (the 16
// outputs of one input are then four 16-byte shared loads, the same for every thread: broadcast).
__host__ __device__ inline void stage_weights(ExactShared& s, int t, const MicroastHeadWeights& wt) {
  for (int i = t; i < kTaps9 * kF / 4; i += kThreads) copy16(s.w9t + 4 * i, wt.w9 + 4 * i);
  stage_w1(s.half, t, wt);
}

// Phase 1, threads 0..254: relu(9x9 3->16 + bias) at one staged pixel.
__host__ __device__ inline void stage_full(ExactShared& s, int t, int block, int n, const float* image, int H, int W,
                                           const MicroastHeadWeights& wt) {
  if (t >= kSpanPixels) return;
  const float* img = image + static_cast<long long>(n) * 3 * H * W;
  const int fy = staged_row(tile_y0(block, W), t / kSpanW, H), fx = staged_row(tile_x0(block, W), t % kSpanW, W);
  // A fresh partial per input channel (81 products), then the three and the bias: shorter FMA chains
  // round closer to the exact sum (as in the residual block and the tail's 9x9).
  float acc[kF];
#pragma unroll
  for (int c = 0; c < kF; ++c) acc[c] = 0.f;
#pragma unroll 1  // unrolled, the three channels' loads are hoisted together: 140 registers on sm_80, not 80
  for (int ci = 0; ci < 3; ++ci) {
    float part[kF];
#pragma unroll
    for (int c = 0; c < kF; ++c) part[c] = 0.f;
    for (int ky = 0; ky < 9; ++ky) {
      const float* row = img + (static_cast<long long>(ci) * H + reflect(fy + ky - kReach, H)) * W;
      for (int kx = 0; kx < 9; ++kx) {
        const float v = row[reflect(fx + kx - kReach, W)];
        const float4* w = reinterpret_cast<const float4*>(s.w9t + ((ci * 9 + ky) * 9 + kx) * kF);
#pragma unroll
        for (int q = 0; q < kF / 4; ++q) {
          const float4 wq = w[q];
          part[4 * q] = fmaf(wq.x, v, part[4 * q]);
          part[4 * q + 1] = fmaf(wq.y, v, part[4 * q + 1]);
          part[4 * q + 2] = fmaf(wq.z, v, part[4 * q + 2]);
          part[4 * q + 3] = fmaf(wq.w, v, part[4 * q + 3]);
        }
      }
    }
#pragma unroll
    for (int c = 0; c < kF; ++c) acc[c] += part[c];
  }
#pragma unroll
  for (int c = 0; c < kF; ++c) {
    const float y = acc[c] + wt.b9[c];
    s.f[t * kF + c] = y > 0.f ? y : 0.f;
  }
}

// --- fp16/bf16 maps: the 9x9 on the tensor cores ----------------------------------------------------

// Phase 0, every thread: the 9x9's B operand (packed by the caller), copied 16 bytes a load;
// the 1x1's weights; and the image tile, reflected. The 9x9 reads image rows fy - 4 .. fy + 4 of staged
// rows fy in [0, H): one reflection of rows in [-4, H + 3] (H >= 5); clamping only moves rows that no
// staged pixel reads (an overhanging tile's) back inside the image.
template <typename T>
__host__ __device__ inline void stage_operands(MmaShared<T>& s, int t, int block, int n, const T* image, int H, int W,
                                               const MicroastHeadWeights& wt) {
  constexpr int kPieces = kK * kF * sizeof(T) / 16, kPerPiece = 16 / sizeof(T);
  const T* w9 = static_cast<const T*>(wt.w9_mma);
  for (int i = t; i < kPieces; i += kThreads) copy16(s.w9 + i * kPerPiece, w9 + i * kPerPiece);
  stage_w1(s.half, t, wt);
  const T* img = image + static_cast<long long>(n) * 3 * H * W;
  const int y0 = 2 * tile_y0(block, W) - 1 - kReach, x0 = 2 * tile_x0(block, W) - 1 - kReach;
  const auto clamp = [](int i, int n) { return i < -kReach ? -kReach : imin(i, n - 1 + kReach); };
  for (int e = t; e < 3 * kImageH * kImageW; e += kThreads) {
    const int ci = e / (kImageH * kImageW), v = (e / kImageW) % kImageH, u = e % kImageW;
    const int y = reflect(clamp(y0 + v, H), H), x = reflect(clamp(x0 + u, W), W);
    s.image[e] = img[(static_cast<long long>(ci) * H + y) * W + x];
  }
}

// Phase 1, every thread: where its staged pixel's 9x9 window starts in the image tile (thread 255, past
// the 255 staged pixels, gathers pixel 0's window into a row that nothing reads).
__host__ __device__ inline int window_origin(int t, int block, int H, int W) {
  if (t >= kSpanPixels) return 0;
  const int j0 = tile_y0(block, W), i0 = tile_x0(block, W);
  const int fy = staged_row(j0, t / kSpanW, H), fx = staged_row(i0, t % kSpanW, W);
  return (fy - (2 * j0 - 1)) * kImageW + (fx - (2 * i0 - 1));
}

// Image-tile offset of im2col column k = (in, ky, kx) from a window's origin.
__host__ __device__ constexpr int tap_offset(int k) {
  return (k / 81) * kImageH * kImageW + (k % 81 / 9) * kImageW + k % 9;
}

// Phase 1a, every thread: columns 16 * chunk .. + 15 of its pixel's im2col row (zero past tap 243), into
// its warp's rows, 16 bytes a store.
template <typename T>
__host__ __device__ inline void gather_chunk(MmaShared<T>& s, int t, int chunk, int origin) {
  constexpr int kPerStore = 16 / sizeof(T);
  T* row = s.fine.rows[t / 32] + (t % 32) * kRowPitch;
#pragma unroll
  for (int q = 0; q < kKChunk / kPerStore; ++q) {
    alignas(16) T v[kPerStore];
#pragma unroll
    for (int j = 0; j < kPerStore; ++j) {
      const int k = chunk * kKChunk + q * kPerStore + j;
      v[j] = k < kTaps9 ? s.image[origin + tap_offset(k)] : from_float<T>(0.f);
    }
    store16(row + q * kPerStore, v);
  }
}

// Phase 1b, every warp: its 32 rows times the chunk's 16 x 16 weights.
template <typename T>
__host__ __device__ inline void multiply_chunk(const MmaShared<T>& s, int warp, int chunk, warp_mma::Accumulator* acc) {
  warp_mma::OperandB<T> b;
  warp_mma::load(b, s.w9 + chunk * kKChunk * kF, kF);
  for (int m = 0; m < kWarpRows / warp_mma::kSide; ++m) {
    warp_mma::OperandA<T> a;
    warp_mma::load(a, s.fine.rows[warp] + m * warp_mma::kSide * kRowPitch, kRowPitch);
    warp_mma::multiply_add(acc[m], a, b);
  }
}

// Phase 1c, every warp, after its last product: the accumulators over its own rows, as f.
__host__ __device__ inline void store_accumulators(float* f, int warp, const warp_mma::Accumulator* acc) {
  for (int m = 0; m < kWarpRows / warp_mma::kSide; ++m)
    warp_mma::store(f + (warp * kWarpRows + m * warp_mma::kSide) * kF, acc[m], kF);
}

// Phase 1d, every thread: bias and ReLU of its pixel's 16 channels.
__host__ __device__ inline void finish_full(float* f, int t, const MicroastHeadWeights& wt) {
#pragma unroll
  for (int c = 0; c < kF; ++c) {
    const float v = f[t * kF + c] + wt.b9[c];
    f[t * kF + c] = v > 0.f ? v : 0.f;
  }
}

// --- every map dtype ---------------------------------------------------------------------------------
// Half kernel, phase 2, every thread: relu(grouped stride-2 3x3 16->32) at (pixel, channel) pairs of
// the tile (a warp: one pixel's 32 channels). Pixels past the map's edge compute unused values.
__host__ __device__ inline void half_grouped(const float* f, HalfLevel& s, int t, const MicroastHeadWeights& wt) {
  for (int i = t; i < kTilePixels * kH; i += kThreads) {
    const int p = i / kH, co = i % kH;
    const int ly = 2 * (p / kTileW), lx = 2 * (p % kTileW);  // the window's top-left in the staged pixels
    float acc = wt.bg1[co];
    for (int tap = 0; tap < 9; ++tap) {
      acc = fmaf(wt.wg1[co * 9 + tap], f[((ly + tap / 3) * kSpanW + lx + tap % 3) * kF + co / 2], acc);
    }
    s.g[p * kHStride + co] = acc > 0.f ? acc : 0.f;
  }
}

// Half kernel, phase 3, every thread: relu(1x1 32->32) at (pixel, channel) pairs of the tile, stored.
template <typename T>
__host__ __device__ inline void half_pixel(const HalfLevel& s, int t, int block, int n, int H, int W,
                                           const MicroastHeadWeights& wt, T* half) {
  const int H2 = half_size(H), W2 = half_size(W);
  for (int i = t; i < kTilePixels * kH; i += kThreads) {
    const int p = i / kH, co = i % kH;
    const int j = tile_y0(block, W) + p / kTileW, x = tile_x0(block, W) + p % kTileW;
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
