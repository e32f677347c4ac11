// Instance-norm statistics of an NHWC map: per-chunk Welford partials (one block per chunk), then one
// thread per (n, c) merges them. The bodies are in instance_stats_impl.cuh.
#include "instance_stats_impl.cuh"

namespace microast {
namespace {

template <typename T>
__global__ void __launch_bounds__(stats::kThreads) stats_partials_kernel(const T* __restrict__ x, long long pixels, int chunks,
                                      float* __restrict__ partials) {
  __shared__ stats::Shared s;
  stats::lane_partial(s, threadIdx.x, threadIdx.y, blockIdx.x, blockIdx.y, x, pixels);
  __syncthreads();
  if (threadIdx.y == 0) stats::chunk_partial(s, threadIdx.x, blockIdx.x, chunks, blockIdx.y, partials);
}

__global__ void stats_merge_kernel(const float* __restrict__ partials, int chunks, float eps,
                                   float* __restrict__ mean_out, float* __restrict__ std_out) {
  stats::merge(threadIdx.x, blockIdx.x, partials, chunks, eps, mean_out, std_out);
}

template <typename T>
cudaError_t launch_stats(const void* x, int n, long long pixels, float eps, float* partials, float* mean,
                         float* std, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;  // an empty grid is an invalid launch; there is nothing to compute
  const int chunks = static_cast<int>(stats::chunk_count(pixels));
  stats_partials_kernel<T><<<dim3(chunks, n), dim3(MICROAST_CHANNELS, stats::kLanes), 0, stream>>>(
      static_cast<const T*>(x), pixels, chunks, partials);
  stats_merge_kernel<<<n, MICROAST_CHANNELS, 0, stream>>>(partials, chunks, eps, mean, std);
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

size_t microast_stats_partials_size(int n, long long pixels) {
  return static_cast<size_t>(n) * microast::stats::chunk_count(pixels) * 3 * MICROAST_CHANNELS;
}

cudaError_t microast_instance_stats(MicroastDtype dtype, const void* x, int n, long long pixels, float eps,
                                    float* partials, float* mean, float* std, cudaStream_t stream) {
  cudaError_t error = cudaErrorInvalidValue;
  microast::with_map_type(dtype, [&](auto tag) {
    error = microast::launch_stats<decltype(tag)>(x, n, pixels, eps, partials, mean, std, stream);
  });
  return error;
}
