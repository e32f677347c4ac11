// One MicroAST residual block on an NHWC quarter-resolution map, as two launches of one kernel:
// conv1 (FeatMod affine applied on load, FilterMod epilogue, ReLU) into a scratch map, then conv2
// (FilterMod epilogue, residual add of the FeatMod'd input). 3x3 convolutions, reflection by index.
// fp32 maps take the exact fp32 kernel, fp16/bf16 maps the tensor-core kernel (fp32 accumulation).
// The bodies are in resblock_impl.cuh.
#include <type_traits>

#include "resblock_impl.cuh"

namespace microast {
namespace {

template <typename T, bool kSecond>
__global__ void __launch_bounds__(resblock::kThreads)
resblock_conv_kernel(const T* __restrict__ in, const T* __restrict__ block_input, const float* __restrict__ weight,
                     const float* __restrict__ bias, MicroastModulation mod, int h, int w, T* __restrict__ out) {
  __shared__ resblock::Shared s;
  const int t = threadIdx.x, block = blockIdx.x, n = blockIdx.y;
  if (t < MICROAST_CHANNELS) load_signals(s.sig, t, n, mod);
  __syncthreads();
  resblock::load_tile<T, kSecond>(s, t, block, n, in, h, w);
  __syncthreads();
  resblock::convolve<T, kSecond>(s, t, block, n, block_input, weight, bias, h, w, out);
}

template <typename T, bool kSecond>
__global__ void __launch_bounds__(resblock_mma::kThreads)
resblock_mma_kernel(const T* __restrict__ in, const T* __restrict__ block_input, const T* __restrict__ weight,
                    const float* __restrict__ bias, MicroastModulation mod, int h, int w, T* __restrict__ out) {
  __shared__ resblock_mma::Shared<T> s;
  const int t = threadIdx.x, warp = t / 32, block = blockIdx.x, n = blockIdx.y;
  if (t < MICROAST_CHANNELS) load_signals(s.sig, t, n, mod);
  __syncthreads();
  resblock_mma::load_tile<T, kSecond>(s, t, block, n, in, h, w);
  warp_mma::Accumulator acc[resblock_mma::kNFrags];
#pragma unroll
  for (int j = 0; j < resblock_mma::kNFrags; ++j) warp_mma::zero(acc[j]);
  for (int tap = 0; tap < 9; ++tap) {
    __syncthreads();  // the tile is loaded (tap 0) / every warp is done with the previous tap's weights
    resblock_mma::load_tap(s, t, tap, weight);
    __syncthreads();
    resblock_mma::multiply_tap(s, warp, tap, acc);
  }
  __syncthreads();  // every warp is done with the tile before the accumulators take its place
  resblock_mma::store_accumulators(s, warp, acc);
  __syncthreads();
  resblock_mma::epilogue<T, kSecond>(s, t, block, n, in, block_input, bias, h, w, out);
}

template <typename T, bool kSecond>
void launch_conv(const T* in, const T* block_input, const T* weight, const float* bias, const MicroastModulation& mod,
                 int n, int h, int w, T* out, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    const dim3 grid(resblock::blocks(h, w), n);
    resblock_conv_kernel<T, kSecond><<<grid, resblock::kThreads, 0, stream>>>(in, block_input, weight, bias, mod, h, w, out);
  } else {
    const dim3 grid(resblock_mma::blocks(h, w), n);
    resblock_mma_kernel<T, kSecond><<<grid, resblock_mma::kThreads, 0, stream>>>(in, block_input, weight, bias, mod, h, w, out);
  }
}

template <typename T>
cudaError_t launch_resblock(const void* x, const void* w1, const float* b1, const void* w2, const float* b2,
                            MicroastModulation mod, int n, int h, int w, void* scratch, void* out,
                            cudaStream_t stream) {
  if (n == 0) return cudaSuccess;  // an empty grid is an invalid launch; there is nothing to compute
  const T* input = static_cast<const T*>(x);
  launch_conv<T, false>(input, nullptr, static_cast<const T*>(w1), b1, mod, n, h, w, static_cast<T*>(scratch), stream);
  launch_conv<T, true>(static_cast<const T*>(scratch), input, static_cast<const T*>(w2), b2, mod, n, h, w,
                       static_cast<T*>(out), stream);
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

cudaError_t microast_resblock(MicroastDtype dtype, const void* x, const void* w1, const float* b1,
                              const void* w2, const float* b2, MicroastModulation mod, int n, int h, int w,
                              void* scratch, void* out, cudaStream_t stream) {
  cudaError_t error = cudaErrorInvalidValue;
  microast::with_map_type(dtype, [&](auto tag) {
    error = microast::launch_resblock<decltype(tag)>(x, w1, b1, w2, b2, mod, n, h, w, scratch, out, stream);
  });
  return error;
}
