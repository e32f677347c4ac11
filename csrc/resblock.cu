// One MicroAST residual block on an NHWC quarter-resolution map, as two launches of one kernel:
// conv1 (FeatMod affine applied on load, FilterMod epilogue, ReLU) into a scratch map, then conv2
// (FilterMod epilogue, residual add of the FeatMod'd input). 3x3 convolutions, reflection by index,
// exact fp32 arithmetic in every dtype (no tensor cores yet). The body is in resblock_impl.cuh.
#include "resblock_impl.cuh"

namespace microast {
namespace {

template <typename T, bool kSecond>
__global__ void __launch_bounds__(resblock::kThreads)
resblock_conv_kernel(const T* __restrict__ in, const T* __restrict__ block_input, const float* __restrict__ weight,
                     const float* __restrict__ bias, MicroastModulation mod, int h, int w, T* __restrict__ out) {
  __shared__ resblock::Shared s;
  const int t = threadIdx.x, block = blockIdx.x, n = blockIdx.y;
  if (t < MICROAST_CHANNELS) resblock::load_signals(s, t, n, mod);
  __syncthreads();
  resblock::load_tile<T, kSecond>(s, t, block, n, in, h, w);
  __syncthreads();
  resblock::convolve<T, kSecond>(s, t, block, n, block_input, weight, bias, h, w, out);
}

template <typename T>
cudaError_t launch_resblock(const void* x, const float* w1, const float* b1, const float* w2, const float* b2,
                            MicroastModulation mod, int n, int h, int w, void* scratch, void* out,
                            cudaStream_t stream) {
  const dim3 grid(resblock::blocks(h, w), n);
  const T* input = static_cast<const T*>(x);
  resblock_conv_kernel<T, false><<<grid, resblock::kThreads, 0, stream>>>(input, nullptr, w1, b1, mod, h, w,
                                                                          static_cast<T*>(scratch));
  resblock_conv_kernel<T, true><<<grid, resblock::kThreads, 0, stream>>>(static_cast<const T*>(scratch), input,
                                                                         w2, b2, mod, h, w, static_cast<T*>(out));
  return cudaGetLastError();
}

}  // namespace
}  // namespace microast

cudaError_t microast_resblock(MicroastDtype dtype, const void* x, const float* w1, const float* b1,
                              const float* w2, const float* b2, MicroastModulation mod, int n, int h, int w,
                              void* scratch, void* out, cudaStream_t stream) {
  cudaError_t error = cudaErrorInvalidValue;
  microast::with_map_type(dtype, [&](auto tag) {
    error = microast::launch_resblock<decltype(tag)>(x, w1, b1, w2, b2, mod, n, h, w, scratch, out, stream);
  });
  return error;
}
