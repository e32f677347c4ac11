// The kernel bodies run on the host: every (block, thread) in turn, phase by phase, with each barrier
// of the device kernel a boundary between phases. This tests the kernels' indexing, reflection,
// epilogues and arithmetic on a machine without a GPU (tests/test_cuda_ext.py builds it with
// `nvcc -x cu -shared` and calls it through ctypes). It cannot find what only a device shows: races,
// missing barriers, the memory model; the GPU tests are for those.
#include <memory>
#include <type_traits>
#include <vector>

#include "decoder_tail_impl.cuh"
#include "encoder_head_impl.cuh"
#include "instance_stats_impl.cuh"
#include "resblock_impl.cuh"

namespace {

template <typename T>
void emulate_stats(const void* x, int n, long long pixels, float eps, float* mean, float* std) {
  using namespace microast::stats;
  const int chunks = static_cast<int>(chunk_count(pixels));
  std::vector<float> partials(static_cast<size_t>(n) * chunks * 3 * MICROAST_CHANNELS);
  auto s = std::make_unique<Shared>();
  for (int b = 0; b < n; ++b) {
    for (int chunk = 0; chunk < chunks; ++chunk) {
      for (int lane = 0; lane < kLanes; ++lane)
        for (int c = 0; c < MICROAST_CHANNELS; ++c) lane_partial(*s, c, lane, chunk, b, static_cast<const T*>(x), pixels);
      for (int c = 0; c < MICROAST_CHANNELS; ++c) chunk_partial(*s, c, chunk, chunks, b, partials.data());
    }
  }
  for (int b = 0; b < n; ++b)
    for (int c = 0; c < MICROAST_CHANNELS; ++c) merge(c, b, partials.data(), chunks, eps, mean, std);
}

template <typename T, bool kSecond>
void emulate_exact_conv(const T* in, const T* block_input, const float* weight, const float* bias,
                        const MicroastModulation& mod, int n, int h, int w, T* out) {
  using namespace microast::resblock;
  auto s = std::make_unique<Shared>();
  for (int b = 0; b < n; ++b) {
    for (int block = 0; block < blocks(h, w); ++block) {
      for (int t = 0; t < MICROAST_CHANNELS; ++t) microast::load_signals(s->sig, t, b, mod);
      for (int t = 0; t < kThreads; ++t) load_tile<T, kSecond>(*s, t, block, b, in, h, w);
      for (int t = 0; t < kThreads; ++t) convolve<T, kSecond>(*s, t, block, b, block_input, weight, bias, h, w, out);
    }
  }
}

// resblock_mma_kernel's phases: per-thread phases thread by thread, per-warp phases warp by warp.
template <typename T, bool kSecond>
void emulate_mma_conv(const T* in, const T* block_input, const T* weight, const float* bias,
                      const MicroastModulation& mod, int n, int h, int w, T* out) {
  using namespace microast::resblock_mma;
  using microast::warp_mma::Accumulator;
  auto s = std::make_unique<Shared<T>>();
  std::vector<Accumulator> acc(kWarps * kNFrags);
  for (int b = 0; b < n; ++b) {
    for (int block = 0; block < blocks(h, w); ++block) {
      for (int t = 0; t < MICROAST_CHANNELS; ++t) microast::load_signals(s->sig, t, b, mod);
      for (int t = 0; t < kThreads; ++t) load_tile<T, kSecond>(*s, t, block, b, in, h, w);
      for (Accumulator& a : acc) microast::warp_mma::zero(a);
      for (int tap = 0; tap < 9; ++tap) {
        for (int t = 0; t < kThreads; ++t) load_tap(*s, t, tap, weight);
        for (int warp = 0; warp < kWarps; ++warp) multiply_tap(*s, warp, tap, &acc[warp * kNFrags]);
      }
      for (int warp = 0; warp < kWarps; ++warp) store_accumulators(*s, warp, &acc[warp * kNFrags]);
      for (int t = 0; t < kThreads; ++t) epilogue<T, kSecond>(*s, t, block, b, in, block_input, bias, h, w, out);
    }
  }
}

// As resblock.cu: fp32 maps take the exact kernel, fp16/bf16 maps the tensor-core kernel.
template <typename T, bool kSecond>
void emulate_conv(const T* in, const T* block_input, const T* weight, const float* bias,
                  const MicroastModulation& mod, int n, int h, int w, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    emulate_exact_conv<T, kSecond>(in, block_input, weight, bias, mod, n, h, w, out);
  } else {
    emulate_mma_conv<T, kSecond>(in, block_input, weight, bias, mod, n, h, w, out);
  }
}

template <typename T>
void emulate_resblock(const void* x, const void* w1, const float* b1, const void* w2, const float* b2,
                      const MicroastModulation& mod, int n, int h, int w, void* scratch, void* out) {
  emulate_conv<T, false>(static_cast<const T*>(x), nullptr, static_cast<const T*>(w1), b1, mod, n, h, w,
                         static_cast<T*>(scratch));
  emulate_conv<T, true>(static_cast<const T*>(scratch), static_cast<const T*>(x), static_cast<const T*>(w2), b2, mod,
                        n, h, w, static_cast<T*>(out));
}

template <typename T>
void emulate_tail(const void* x, const MicroastTailWeights& weights, int n, int h, int w, void* out) {
  using namespace microast::tail;
  auto s = std::make_unique<Shared<T>>();
  T* image = static_cast<T*>(out);
  for (int b = 0; b < n; ++b) {
    for (int block = 0; block < blocks(h, w); ++block) {
      if constexpr (!std::is_same_v<T, float>)
        for (int t = 0; t < kThreads; ++t) load_conv9x9_weights<T>(*s, t, weights);
      for (int t = 0; t < kThreads; ++t) stage_half<T>(*s, t, block, b, static_cast<const T*>(x), h, w, weights);
      for (int t = 0; t < kThreads; ++t) stage_full<T>(*s, t, block, 2 * h, 2 * w, weights);
      if constexpr (std::is_same_v<T, float>) {
        for (int t = 0; t < kThreads; ++t) conv9x9<T>(*s, t, block, b, 2 * h, 2 * w, weights, image);
      } else {
        for (int warp = 0; warp < kWarps; ++warp) conv9x9_multiply<T>(*s, warp);
        for (int t = 0; t < kThreads; ++t) conv9x9_store<T>(*s, t, block, b, 2 * h, 2 * w, weights, image);
      }
    }
  }
}

template <typename T>
void emulate_head(const void* image, const MicroastHeadWeights& weights, int n, int h, int w, void* half, void* out) {
  using namespace microast::head;
  using microast::warp_mma::Accumulator;
  auto s = std::make_unique<Shared<T>>();
  const T* img = static_cast<const T*>(image);
  for (int b = 0; b < n; ++b) {
    for (int block = 0; block < half_blocks(h, w); ++block) {
      float* f;
      if constexpr (std::is_same_v<T, float>) {
        for (int t = 0; t < kThreads; ++t) stage_weights(*s, t, weights);
        for (int t = 0; t < kThreads; ++t) stage_full(*s, t, block, b, img, h, w, weights);
        f = s->f;
      } else {
        for (int t = 0; t < kThreads; ++t) stage_operands<T>(*s, t, block, b, img, h, w, weights);
        // encoder_head.cu's warp-level phases, warp by warp
        for (int warp = 0; warp < kWarps; ++warp) {
          Accumulator acc[kWarpRows / microast::warp_mma::kSide];
          for (Accumulator& a : acc) microast::warp_mma::zero(a);
          for (int chunk = 0; chunk < kChunks; ++chunk) {
            for (int t = 32 * warp; t < 32 * warp + 32; ++t) gather_chunk<T>(*s, t, chunk, window_origin(t, block, h, w));
            multiply_chunk<T>(*s, warp, chunk, acc);
          }
          store_accumulators(s->fine.f, warp, acc);
          for (int t = 32 * warp; t < 32 * warp + 32; ++t) finish_full(s->fine.f, t, weights);
        }
        f = s->fine.f;
      }
      for (int t = 0; t < kThreads; ++t) half_grouped(f, s->half, t, weights);
      for (int t = 0; t < kThreads; ++t) half_pixel<T>(s->half, t, block, b, h, w, weights, static_cast<T*>(half));
    }
  }
  for (int b = 0; b < n; ++b)
    for (int block = 0; block < quarter_blocks(h, w); ++block)
      for (int t = 0; t < kThreads; ++t)
        quarter_pixel<T>(t, block, b, static_cast<const T*>(half), h, w, weights, static_cast<T*>(out));
}

}  // namespace

// ``weights``: the ten fp32 operands of MicroastHeadWeights, then w9_mma (null for fp32 maps).
extern "C" int microast_emulate_encoder_head(MicroastDtype dtype, const void* image, const void* const* weights, int n, int h,
                                             int w, void* half, void* out) {
  const auto f = [&](int i) { return static_cast<const float*>(weights[i]); };
  const MicroastHeadWeights wt{f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), f(9), weights[10]};
  const bool known = microast::with_map_type(dtype, [&](auto tag) { emulate_head<decltype(tag)>(image, wt, n, h, w, half, out); });
  return known ? 0 : 1;
}

// ``weights``: the twelve fp32 operands of MicroastTailWeights, then w9_mma (null for fp32 maps).
extern "C" int microast_emulate_decoder_tail(MicroastDtype dtype, const void* x, const void* const* weights, int n, int h,
                                             int w, void* out) {
  const auto f = [&](int i) { return static_cast<const float*>(weights[i]); };
  const MicroastTailWeights wt{f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), f(9), f(10), f(11), weights[12]};
  const bool known = microast::with_map_type(dtype, [&](auto tag) { emulate_tail<decltype(tag)>(x, wt, n, h, w, out); });
  return known ? 0 : 1;
}

extern "C" int microast_emulate_stats(MicroastDtype dtype, const void* x, int n, long long pixels, float eps, float* mean,
                                      float* std) {
  const bool known = microast::with_map_type(dtype, [&](auto tag) { emulate_stats<decltype(tag)>(x, n, pixels, eps, mean, std); });
  return known ? 0 : 1;
}

extern "C" int microast_emulate_resblock(MicroastDtype dtype, const void* x, const void* w1, const float* b1, const void* w2,
                                         const float* b2, const float* x_mean, const float* x_std,
                                         const float* s_mean, const float* s_std, int style_batch,
                                         const float* alpha, int alpha_batch, const float* filt_w,
                                         const float* filt_b, int filt_batch, int n, int h, int w, void* scratch,
                                         void* out) {
  const MicroastModulation mod{x_mean, x_std, s_mean, s_std, style_batch, alpha, alpha_batch, filt_w, filt_b, filt_batch};
  const bool known = microast::with_map_type(dtype, [&](auto tag) { emulate_resblock<decltype(tag)>(x, w1, b1, w2, b2, mod, n, h, w, scratch, out); });
  return known ? 0 : 1;
}
