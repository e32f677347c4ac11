// Instance-norm statistics of an NHWC map: per-chunk Welford partials, merged exactly (Chan et al.).
// Never E[x^2] - E[x]^2, which loses digits in fp32 over millions of positions.
#include "dtype_util.cuh"
#include "microast_kernels.h"

namespace microast {
namespace {

constexpr int kLanes = 4;        // pixel lanes of a block (threadIdx.y); threadIdx.x is the channel
constexpr int kChunk = 4096;     // pixels a block reduces: counts stay exact in fp32

long long chunk_count(long long pixels) { return (pixels + kChunk - 1) / kChunk; }

template <typename F>
__device__ __forceinline__ void chan_merge(F& count, F& mean, F& m2, F count_b, F mean_b, F m2_b) {
  if (count_b == F(0)) return;
  const F total = count + count_b;
  const F delta = mean_b - mean;
  mean += delta * (count_b / total);
  m2 += m2_b + delta * delta * (count * count_b / total);
  count = total;
}

// partials: [n][chunk][count, mean, m2][64]
template <typename T>
__global__ void stats_partials_kernel(const T* __restrict__ x, long long pixels, int chunks,
                                      float* __restrict__ partials) {
  const int c = threadIdx.x, lane = threadIdx.y, chunk = blockIdx.x, n = blockIdx.y;
  const long long begin = static_cast<long long>(chunk) * kChunk;
  const long long end = begin + kChunk < pixels ? begin + kChunk : pixels;
  const T* base = x + static_cast<long long>(n) * pixels * MICROAST_CHANNELS + c;
  float count = 0.f, mean = 0.f, m2 = 0.f;
  for (long long p = begin + lane; p < end; p += kLanes) {
    const float v = to_float(base[p * MICROAST_CHANNELS]);
    count += 1.f;
    const float delta = v - mean;
    mean += delta / count;
    m2 += delta * (v - mean);
  }
  __shared__ float lanes[3][kLanes][MICROAST_CHANNELS];
  lanes[0][lane][c] = count;
  lanes[1][lane][c] = mean;
  lanes[2][lane][c] = m2;
  __syncthreads();
  if (lane != 0) return;
  for (int l = 1; l < kLanes; ++l) chan_merge(count, mean, m2, lanes[0][l][c], lanes[1][l][c], lanes[2][l][c]);
  float* out = partials + (static_cast<long long>(n) * chunks + chunk) * 3 * MICROAST_CHANNELS;
  out[c] = count;
  out[MICROAST_CHANNELS + c] = mean;
  out[2 * MICROAST_CHANNELS + c] = m2;
}

// One thread per (n, c): merges its chunks in float64 (counts beyond 2^24 stay exact).
__global__ void stats_merge_kernel(const float* __restrict__ partials, int chunks, float eps,
                                   float* __restrict__ mean_out, float* __restrict__ std_out) {
  const int c = threadIdx.x, n = blockIdx.x;
  double count = 0.0, mean = 0.0, m2 = 0.0;
  for (int k = 0; k < chunks; ++k) {
    const float* p = partials + (static_cast<long long>(n) * chunks + k) * 3 * MICROAST_CHANNELS;
    chan_merge(count, mean, m2, static_cast<double>(p[c]), static_cast<double>(p[MICROAST_CHANNELS + c]),
               static_cast<double>(p[2 * MICROAST_CHANNELS + c]));
  }
  mean_out[n * MICROAST_CHANNELS + c] = static_cast<float>(mean);
  std_out[n * MICROAST_CHANNELS + c] = static_cast<float>(sqrt(m2 / (count - 1.0) + eps));  // unbiased
}

template <typename T>
cudaError_t launch_stats(const void* x, int n, long long pixels, float eps, float* partials, float* mean,
                         float* std, cudaStream_t stream) {
  const int chunks = static_cast<int>(chunk_count(pixels));
  stats_partials_kernel<T><<<dim3(chunks, n), dim3(MICROAST_CHANNELS, kLanes), 0, stream>>>(
      static_cast<const T*>(x), pixels, chunks, partials);
  stats_merge_kernel<<<n, MICROAST_CHANNELS, 0, stream>>>(partials, chunks, eps, mean, std);
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

size_t microast_stats_partials_size(int n, long long pixels) {
  return static_cast<size_t>(n) * microast::chunk_count(pixels) * 3 * MICROAST_CHANNELS;
}

cudaError_t microast_instance_stats(MicroastDtype dtype, const void* x, int n, long long pixels, float eps,
                                    float* partials, float* mean, float* std, cudaStream_t stream) {
  switch (dtype) {
    case MICROAST_F32: return microast::launch_stats<float>(x, n, pixels, eps, partials, mean, std, stream);
    case MICROAST_F16: return microast::launch_stats<__half>(x, n, pixels, eps, partials, mean, std, stream);
    case MICROAST_BF16: return microast::launch_stats<__nv_bfloat16>(x, n, pixels, eps, partials, mean, std, stream);
  }
  return cudaErrorInvalidValue;
}
