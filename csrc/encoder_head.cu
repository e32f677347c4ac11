// The encoder head as two kernels (half level with the 9x9 and the grouped 3x3 staged in shared
// memory, then quarter level); bodies in encoder_head_impl.cuh.
#include <type_traits>

#include "encoder_head_impl.cuh"

namespace microast {
namespace {

template <typename T>
__global__ void __launch_bounds__(head::kThreads)
head_half_kernel(const T* __restrict__ image, int h, int w, MicroastHeadWeights weights, T* __restrict__ half) {
  __shared__ head::Shared<T> s;  // 42.5 KB (fp32), 38.7 KB (fp16/bf16)
  const int t = threadIdx.x, block = blockIdx.x, n = blockIdx.y;
  float* f;
  if constexpr (std::is_same_v<T, float>) {
    head::stage_weights(s, t, weights);
    __syncthreads();
    head::stage_full(s, t, block, n, image, h, w, weights);
    f = s.f;
  } else {
    head::stage_operands<T>(s, t, block, n, image, h, w, weights);
    __syncthreads();
    // Each warp gathers and multiplies its own rows: warp barriers only, until the accumulators are in.
    const int warp = t / 32, origin = head::window_origin(t, block, h, w);
    warp_mma::Accumulator acc[head::kWarpRows / warp_mma::kSide];
    for (warp_mma::Accumulator& a : acc) warp_mma::zero(a);
#pragma unroll  // the im2col offsets become constants
    for (int chunk = 0; chunk < head::kChunks; ++chunk) {
      head::gather_chunk<T>(s, t, chunk, origin);
      __syncwarp();
      head::multiply_chunk<T>(s, warp, chunk, acc);
      __syncwarp();  // the rows are read before the next chunk (or the accumulators) overwrites them
    }
    head::store_accumulators(s.fine.f, warp, acc);
    __syncwarp();
    head::finish_full(s.fine.f, t, weights);
    f = s.fine.f;
  }
  __syncthreads();
  head::half_grouped(f, s.half, t, weights);
  __syncthreads();
  head::half_pixel<T>(s.half, t, block, n, h, w, weights, half);
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
