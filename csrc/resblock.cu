// One MicroAST residual block on an NHWC quarter-resolution map, as two launches of one kernel:
// conv1 (FeatMod affine applied on load, FilterMod epilogue, ReLU) into a scratch map, then conv2
// (FilterMod epilogue, residual add of the FeatMod'd input). 3x3 convolutions, reflection by index.
//
// A block computes an 8x8 pixel tile for all 64 output channels: the reflected 10x10x64 input tile
// sits in shared memory (row stride 65 floats, so the 32 pixels a warp reads fall in 32 banks), each
// thread accumulates 16 output channels of one pixel in fp32, and the packed weights [tap][in][out]
// stream through the read-only cache (a warp's threads read the same weights: broadcast loads).
// Exact fp32 arithmetic in every dtype: this is the reference-grade path; no tensor cores yet.
#include "dtype_util.cuh"
#include "microast_kernels.h"

namespace microast {
namespace {

constexpr int kTile = 8;                       // output tile side
constexpr int kHalo = kTile + 2;               // input tile side
constexpr int kStride = MICROAST_CHANNELS + 1;  // padded channel stride in shared memory
constexpr int kThreads = 256;                  // 64 pixels x 4 groups of 16 output channels
constexpr int kOutPerThread = 16;

template <typename T, bool kSecond>
__global__ void __launch_bounds__(kThreads)
resblock_conv_kernel(const T* __restrict__ in, const T* __restrict__ block_input, const float* __restrict__ weight,
                     const float* __restrict__ bias, MicroastModulation mod, int h, int w, T* __restrict__ out) {
  __shared__ float tile[kHalo * kHalo * kStride];
  __shared__ float affine_a[MICROAST_CHANNELS], affine_b[MICROAST_CHANNELS];
  __shared__ float filt_w[MICROAST_CHANNELS], filt_b[MICROAST_CHANNELS];
  const int n = blockIdx.y, t = threadIdx.x;
  const int tiles_w = (w + kTile - 1) / kTile;
  const int y0 = (blockIdx.x / tiles_w) * kTile, x0 = (blockIdx.x % tiles_w) * kTile;
  const bool featmod = mod.x_mean != nullptr, filtermod = mod.filt_w != nullptr;

  if (t < MICROAST_CHANNELS) {
    float a = 1.f, b = 0.f;
    if (featmod) {  // alpha * FeatMod(x) + (1 - alpha) * x == a * x + b
      const int s = (mod.style_batch == 1 ? 0 : n) * MICROAST_CHANNELS + t, i = n * MICROAST_CHANNELS + t;
      const float alpha = mod.alpha[mod.alpha_batch == 1 ? 0 : n];
      const float ratio = mod.s_std[s] / mod.x_std[i];
      a = alpha * ratio + (1.f - alpha);
      b = alpha * (mod.s_mean[s] - mod.x_mean[i] * ratio);
    }
    affine_a[t] = a;
    affine_b[t] = b;
    const int f = (mod.filt_batch == 1 ? 0 : n) * MICROAST_CHANNELS + t;
    filt_w[t] = filtermod ? mod.filt_w[f] : 1.f;
    filt_b[t] = filtermod ? mod.filt_b[f] : 0.f;
  }
  __syncthreads();

  // The input tile with its 1-pixel halo, reflected at the map border. Rows/columns past the border
  // (a tile overhanging the map) read a valid row; their outputs are never stored.
  const long long map = static_cast<long long>(h) * w * MICROAST_CHANNELS;
  const T* src = in + n * map;
  for (int i = t; i < kHalo * kHalo * MICROAST_CHANNELS; i += kThreads) {
    const int c = i % MICROAST_CHANNELS, p = i / MICROAST_CHANNELS;
    const int gy = reflect(min(y0 + p / kHalo - 1, h), h), gx = reflect(min(x0 + p % kHalo - 1, w), w);
    float v = to_float(src[(static_cast<long long>(gy) * w + gx) * MICROAST_CHANNELS + c]);
    if (!kSecond) v = affine_a[c] * v + affine_b[c];  // conv1 reads x' = a * x + b
    tile[p * kStride + c] = v;
  }
  __syncthreads();

  const int pixel = t % (kTile * kTile), group = t / (kTile * kTile);
  const int oy = pixel / kTile, ox = pixel % kTile;
  const int co0 = group * kOutPerThread;
  float acc[kOutPerThread];
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) acc[j] = bias[co0 + j];
  for (int tap = 0; tap < 9; ++tap) {
    const float* window = tile + ((oy + tap / 3) * kHalo + ox + tap % 3) * kStride;
    const float4* taps = reinterpret_cast<const float4*>(weight + tap * MICROAST_CHANNELS * MICROAST_CHANNELS + co0);
    for (int ci = 0; ci < MICROAST_CHANNELS; ++ci) {
      const float v = window[ci];
#pragma unroll
      for (int q = 0; q < kOutPerThread / 4; ++q) {
        const float4 wq = __ldg(taps + ci * (MICROAST_CHANNELS / 4) + q);
        acc[4 * q] = fmaf(v, wq.x, acc[4 * q]);
        acc[4 * q + 1] = fmaf(v, wq.y, acc[4 * q + 1]);
        acc[4 * q + 2] = fmaf(v, wq.z, acc[4 * q + 2]);
        acc[4 * q + 3] = fmaf(v, wq.w, acc[4 * q + 3]);
      }
    }
  }

  const int gy = y0 + oy, gx = x0 + ox;
  if (gy >= h || gx >= w) return;
  const long long o = n * map + (static_cast<long long>(gy) * w + gx) * MICROAST_CHANNELS + co0;
  const float* centre = tile + ((oy + 1) * kHalo + ox + 1) * kStride;  // this conv's input at the pixel
#pragma unroll
  for (int j = 0; j < kOutPerThread; ++j) {
    const int co = co0 + j;
    float y = filt_w[co] * acc[j] + filt_b[co] * centre[co];  // FilterMod (identity without signals)
    if (kSecond) {
      y += affine_a[co] * to_float(block_input[o + j]) + affine_b[co];  // + x'
    } else {
      y = fmaxf(y, 0.f);
    }
    out[o + j] = from_float<T>(y);
  }
}

template <typename T>
cudaError_t launch_resblock(const void* x, const float* w1, const float* b1, const float* w2, const float* b2,
                            MicroastModulation mod, int n, int h, int w, void* scratch, void* out,
                            cudaStream_t stream) {
  const dim3 grid(((h + kTile - 1) / kTile) * ((w + kTile - 1) / kTile), n);
  const T* input = static_cast<const T*>(x);
  resblock_conv_kernel<T, false><<<grid, kThreads, 0, stream>>>(input, nullptr, w1, b1, mod, h, w,
                                                                static_cast<T*>(scratch));
  resblock_conv_kernel<T, true><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(scratch), input, w2, b2,
                                                               mod, h, w, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

cudaError_t microast_resblock(MicroastDtype dtype, const void* x, const float* w1, const float* b1,
                              const float* w2, const float* b2, MicroastModulation mod, int n, int h, int w,
                              void* scratch, void* out, cudaStream_t stream) {
  switch (dtype) {
    case MICROAST_F32:
      return microast::launch_resblock<float>(x, w1, b1, w2, b2, mod, n, h, w, scratch, out, stream);
    case MICROAST_F16:
      return microast::launch_resblock<__half>(x, w1, b1, w2, b2, mod, n, h, w, scratch, out, stream);
    case MICROAST_BF16:
      return microast::launch_resblock<__nv_bfloat16>(x, w1, b1, w2, b2, mod, n, h, w, scratch, out, stream);
  }
  return cudaErrorInvalidValue;
}
