// The residual-block kernels' bodies in phases, each a function of (block, thread) or (block, warp):
// resblock.cu runs them as kernels with barriers between; host_emulation.cpp runs them on the host,
// thread by thread (warp by warp), so that the indexing and arithmetic are tested without a GPU.
// Two forms of one 3x3 convolution with its epilogue:
//   resblock::       exact fp32 arithmetic (fp32 maps);
//   resblock_mma::   tensor cores, fp16/bf16 operands with fp32 accumulation (fp16/bf16 maps).
//
// Exact form: a block computes an 8x8 pixel tile for all 64 output channels: the reflected 10x10x64 input tile
// sits in shared memory (65 floats a pixel, rows padded to 8 banks apart, so the 4 rows x 8 pixels a
// warp reads fall in 32 distinct banks), each thread accumulates 16 output channels of one pixel in
// fp32, and the packed weights [tap][in][out] stream through the read-only cache (a warp's threads
// read the same weights: broadcast loads).
#pragma once

#include "dtype_util.cuh"
#include "microast_kernels.h"
#include "warp_mma.cuh"

namespace microast {

// FeatMod + alpha as ``a * x + b`` and the FilterMod pair, per channel of one sample (identity when off).
struct BlockSignals {
  float affine_a[MICROAST_CHANNELS], affine_b[MICROAST_CHANNELS];
  float filt_w[MICROAST_CHANNELS], filt_b[MICROAST_CHANNELS];
};

// Phase 1 of both forms, threads 0..63: channel t's FeatMod affine and FilterMod pair for sample n.
__host__ __device__ inline void load_signals(BlockSignals& s, int t, int n, const MicroastModulation& mod) {
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

namespace resblock {

constexpr int kTile = 8;                       // output tile side
constexpr int kHalo = kTile + 2;               // input tile side
constexpr int kStride = MICROAST_CHANNELS + 1;  // floats a pixel in shared memory (one bank apart)
// Floats a tile row: a warp reads 4 rows x 8 pixels, in banks (row * kRowPitch + pixel) mod 32, so
// the pitch is 8 mod 32 (650, unpadded, would put pixels 30..37 of the row-major order on banks 0..5).
constexpr int kRowPitch = kHalo * kStride + 30;
static_assert(kRowPitch % 32 == 8, "a warp's 4 x 8 pixels must fall in distinct banks");
constexpr int kThreads = 256;                  // 64 pixels x 4 groups of 16 output channels
constexpr int kOutPerThread = 16;

struct Shared {
  float tile[kHalo * kRowPitch];
  BlockSignals sig;
};

__host__ __device__ inline int blocks_w(int w) { return (w + kTile - 1) / kTile; }
__host__ __device__ inline int blocks(int h, int w) { return ((h + kTile - 1) / kTile) * blocks_w(w); }

// Where input tile pixel (y, x) starts in ``tile``.
__host__ __device__ inline int tile_pixel(int y, int x) { return y * kRowPitch + x * kStride; }

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
    if (!kSecond) v = s.sig.affine_a[c] * v + s.sig.affine_b[c];
    s.tile[tile_pixel(p / kHalo, p % kHalo) + c] = v;
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
  // Each tap's 64 products sum into a fresh partial that is then added to the total: one FMA chain of
  // 576 rounded about twice as far from the exact sum as PyTorch's convolutions (docs/kernel_notes.md).
  float acc[kOutPerThread];
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) acc[j] = 0.f;
  for (int tap = 0; tap < 9; ++tap) {
    const float* window = s.tile + tile_pixel(oy + tap / 3, ox + tap % 3);
    const float* taps = weight + tap * MICROAST_CHANNELS * MICROAST_CHANNELS + co0;
    float part[kOutPerThread];
#pragma unroll
    for (int j = 0; j < kOutPerThread; ++j) part[j] = 0.f;
    for (int ci = 0; ci < MICROAST_CHANNELS; ++ci) {
      const float v = window[ci];
#pragma unroll
      for (int q = 0; q < kOutPerThread / 4; ++q) {
        const float4 wq = load4(taps + ci * MICROAST_CHANNELS + 4 * q);
        part[4 * q] = fmaf(v, wq.x, part[4 * q]);
        part[4 * q + 1] = fmaf(v, wq.y, part[4 * q + 1]);
        part[4 * q + 2] = fmaf(v, wq.z, part[4 * q + 2]);
        part[4 * q + 3] = fmaf(v, wq.w, part[4 * q + 3]);
      }
    }
#pragma unroll
    for (int j = 0; j < kOutPerThread; ++j) acc[j] += part[j];
  }
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) acc[j] += bias[co0 + j];
  const int gy = y0 + oy, gx = x0 + ox;
  if (gy >= h || gx >= w) return;
  const long long o = (static_cast<long long>(n) * h * w + static_cast<long long>(gy) * w + gx) * MICROAST_CHANNELS + co0;
  const float* centre = s.tile + tile_pixel(oy + 1, ox + 1);  // this conv's input at the pixel
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) {
    const int co = co0 + j;
    float y = s.sig.filt_w[co] * acc[j] + s.sig.filt_b[co] * centre[co];  // FilterMod (identity without signals)
    if (kSecond) {
      y += s.sig.affine_a[co] * to_float(block_input[o + j]) + s.sig.affine_b[co];  // + x'
    } else {
      y = y > 0.f ? y : 0.f;
    }
    out[o + j] = from_float<T>(y);
  }
}

}  // namespace resblock

// Tensor-core form, for fp16/bf16 maps. The convolution is an implicit GEMM: M = pixels, N = 64 output
// channels, K = 9 taps x 64 input channels. A block computes an 8-row x 16-column pixel tile; warp r
// owns output row r, whose 16 pixels are the M of its products, and all 64 output channels (four 16x16
// accumulators). For tap (dy, dx) and input channels k0..k0+15, the A operand is 16 consecutive pixels
// of the reflected input tile in shared memory, row r + dy from column dx: a plain row-major operand
// with the pixel stride as its leading dimension, so no im2col copy exists. Each tap's 64x64 weights,
// packed in the map dtype, are copied into shared memory by the whole block, 16 bytes a load (read
// from global once per tile: 72 KB a tile in all, against 23 KB of input tile; larger tiles would
// share them further). The operands are what the reference in fp16 / bf16 multiplies: the map values,
// FeatMod's output x' = a * x + b rounded to the map dtype, and the model's half-precision weights;
// products accumulate in fp32.
namespace resblock_mma {

constexpr int kRows = 8, kCols = warp_mma::kSide;  // output tile; kCols is the MMA's M
constexpr int kHaloRows = kRows + 2, kHaloCols = kCols + 2;
constexpr int kWarps = kRows;
constexpr int kThreads = 32 * kWarps;
constexpr int kNFrags = MICROAST_CHANNELS / warp_mma::kSide;  // accumulators per warp
// Elements per pixel (tile) and per input channel (tap weights) in shared memory: 64 + 16, so that
// every operand row starts on a 32-byte boundary (WMMA alignment). Rows 160 bytes apart still meet
// 2-way bank conflicts in the operand loads (rows four apart share a bank); only ldmatrix-level
// layouts (mma.sync with swizzled shared memory) would avoid them.
constexpr int kStride = MICROAST_CHANNELS + 16;
constexpr int kOutStride = MICROAST_CHANNELS + 4;  // fp32 accumulators per pixel in the epilogue

template <typename T>
struct alignas(32) Shared {
  union {
    struct {
      T tile[kHaloRows * kHaloCols * kStride];  // reflected input tile (x' for conv1)
      T tap[MICROAST_CHANNELS * kStride];        // one tap's weights [in][out]
    } in;
    float out[kRows * kCols * kOutStride];       // the accumulators, once every product is done
  };
  BlockSignals sig;
};

__host__ __device__ inline int blocks_w(int w) { return (w + kCols - 1) / kCols; }
__host__ __device__ inline int blocks(int h, int w) { return ((h + kRows - 1) / kRows) * blocks_w(w); }

__host__ __device__ inline int tile_y0(int block, int w) { return (block / blocks_w(w)) * kRows; }
__host__ __device__ inline int tile_x0(int block, int w) { return (block % blocks_w(w)) * kCols; }

// Phase 2, every thread: the input tile with a 1-pixel halo, reflected at the map border (rows and
// columns past the border of an overhanging tile read a valid pixel; their outputs are not stored),
// in the map dtype. conv1 reads x' = a * x + b, conv2 reads y3 as stored.
template <typename T, bool kSecond>
__host__ __device__ inline void load_tile(Shared<T>& s, int t, int block, int n, const T* in, int h, int w) {
  const int y0 = tile_y0(block, w), x0 = tile_x0(block, w);
  const T* src = in + static_cast<long long>(n) * h * w * MICROAST_CHANNELS;
  for (int i = t; i < kHaloRows * kHaloCols * MICROAST_CHANNELS; i += kThreads) {
    const int c = i % MICROAST_CHANNELS, p = i / MICROAST_CHANNELS;
    const int gy = reflect(imin(y0 + p / kHaloCols - 1, h), h), gx = reflect(imin(x0 + p % kHaloCols - 1, w), w);
    const T v = src[(static_cast<long long>(gy) * w + gx) * MICROAST_CHANNELS + c];
    s.in.tile[p * kStride + c] = kSecond ? v : from_float<T>(s.sig.affine_a[c] * to_float(v) + s.sig.affine_b[c]);
  }
}

// Phase 3a (per tap), every thread: 16-byte pieces of the tap's packed weights [in][out] (map dtype) into
// the padded rows of ``tap``.
template <typename T>
__host__ __device__ inline void load_tap(Shared<T>& s, int t, int tap, const T* weight) {
  constexpr int kPerPiece = 16 / sizeof(T), kPiecesPerRow = MICROAST_CHANNELS / kPerPiece;
  static_assert(kStride * sizeof(T) % 16 == 0, "padded weight rows must stay 16-byte aligned");
  const T* src = weight + tap * MICROAST_CHANNELS * MICROAST_CHANNELS;
  for (int i = t; i < MICROAST_CHANNELS * kPiecesPerRow; i += kThreads) {
    const int row = i / kPiecesPerRow, col = (i % kPiecesPerRow) * kPerPiece;
    copy16(s.in.tap + row * kStride + col, src + row * MICROAST_CHANNELS + col);
  }
}

// Phase 3b (per tap), every warp: its row's products for this tap, over the 64 input channels.
template <typename T>
__host__ __device__ inline void multiply_tap(const Shared<T>& s, int warp, int tap, warp_mma::Accumulator* acc) {
  const T* window = s.in.tile + ((warp + tap / 3) * kHaloCols + tap % 3) * kStride;
  for (int k0 = 0; k0 < MICROAST_CHANNELS; k0 += warp_mma::kSide) {
    warp_mma::OperandA<T> a;
    warp_mma::load(a, window + k0, kStride);
#pragma unroll
    for (int j = 0; j < kNFrags; ++j) {
      warp_mma::OperandB<T> b;
      warp_mma::load(b, s.in.tap + k0 * kStride + j * warp_mma::kSide, kStride);
      warp_mma::multiply_add(acc[j], a, b);
    }
  }
}

// Phase 4, every warp (after a barrier: the accumulators overwrite the input tile): its row's
// accumulators to shared memory.
template <typename T>
__host__ __device__ inline void store_accumulators(Shared<T>& s, int warp, const warp_mma::Accumulator* acc) {
#pragma unroll
  for (int j = 0; j < kNFrags; ++j)
    warp_mma::store(s.out + warp * kCols * kOutStride + j * warp_mma::kSide, acc[j], kOutStride);
}

// Phase 5, every thread: the epilogue, consecutive threads on consecutive channels of a pixel (coalesced):
//   conv1: y3 = relu(w * conv1(x') + b_f * x');   conv2: out = x' + w * conv2(y3) + b_f * y3.
// The FilterMod term's input is reloaded from global memory (the tile's space now holds the
// accumulators), as the products saw it: x' rounded to the map dtype, or y3.
template <typename T, bool kSecond>
__host__ __device__ inline void epilogue(const Shared<T>& s, int t, int block, int n, const T* in, const T* block_input,
                                         const float* bias, int h, int w, T* out) {
  const int y0 = tile_y0(block, w), x0 = tile_x0(block, w);
  for (int i = t; i < kRows * kCols * MICROAST_CHANNELS; i += kThreads) {
    const int c = i % MICROAST_CHANNELS, p = i / MICROAST_CHANNELS;
    const int gy = y0 + p / kCols, gx = x0 + p % kCols;
    if (gy >= h || gx >= w) continue;
    const long long o = (static_cast<long long>(n) * h * w + static_cast<long long>(gy) * w + gx) * MICROAST_CHANNELS + c;
    const float a = s.sig.affine_a[c], b = s.sig.affine_b[c];
    float centre = to_float(in[o]);
    if (!kSecond) centre = to_float(from_float<T>(a * centre + b));
    float y = s.sig.filt_w[c] * (s.out[p * kOutStride + c] + bias[c]) + s.sig.filt_b[c] * centre;
    if (kSecond) {
      y += a * to_float(block_input[o]) + b;  // + x'
    } else {
      y = y > 0.f ? y : 0.f;
    }
    out[o] = from_float<T>(y);
  }
}

}  // namespace resblock_mma
}  // namespace microast
