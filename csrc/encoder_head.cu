// The encoder head as two kernels (half level with the 9x9 and the grouped 3x3 staged in shared
// memory, then quarter level); bodies in encoder_head_impl.cuh.
#include "encoder_head_impl.cuh"

namespace microast {
namespace {

template <typename T>
__global__ void __launch_bounds__(head::kThreads)
head_half_kernel(const T* __restrict__ image, int h, int w, MicroastHeadWeights weights, T* __restrict__ half) {
  __shared__ head::Shared s;  // 43 KB
  head::stage_weights(s, threadIdx.x, weights);
  __syncthreads();
  head::stage_full<T>(s, threadIdx.x, blockIdx.x, blockIdx.y, image, h, w, weights);
  __syncthreads();
  head::half_grouped(s, threadIdx.x, weights);
  __syncthreads();
  head::half_pixel<T>(s, threadIdx.x, blockIdx.x, blockIdx.y, h, w, weights, half);
}

template <typename T>
__global__ void __launch_bounds__(head::kThreads)
head_quarter_kernel(const T* __restrict__ half, int h, int w, MicroastHeadWeights weights, T* __restrict__ out) {
  head::quarter_pixel<T>(threadIdx.x, blockIdx.x, blockIdx.y, half, h, w, weights, out);
}

template <typename T>
cudaError_t launch_head(const void* image, MicroastHeadWeights weights, int n, int h, int w, void* half, void* out,
                        cudaStream_t stream) {
  if (n == 0) return cudaSuccess;  // an empty grid is an invalid launch; there is nothing to compute
  head_half_kernel<T><<<dim3(head::half_blocks(h, w), n), head::kThreads, 0, stream>>>(
      static_cast<const T*>(image), h, w, weights, static_cast<T*>(half));
  head_quarter_kernel<T><<<dim3(head::quarter_blocks(h, w), n), head::kThreads, 0, stream>>>(
      static_cast<const T*>(half), h, w, weights, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

cudaError_t microast_encoder_head(MicroastDtype dtype, const void* image, MicroastHeadWeights weights, int n, int h,
                                  int w, void* half, void* out, cudaStream_t stream) {
  cudaError_t error = cudaErrorInvalidValue;
  microast::with_map_type(dtype, [&](auto tag) {
    error = microast::launch_head<decltype(tag)>(image, weights, n, h, w, half, out, stream);
  });
  return error;
}
