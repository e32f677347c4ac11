// The one file that knows about torch: tensors in, raw pointers and the current stream out to the
// kernels of microast_kernels.h. Ops live in the ``microast`` namespace beside the Triton ones (hence a
// FRAGMENT); their fake implementations are registered from Python (microast_fast/backends/cuda_backend.py).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <optional>

#include "microast_kernels.h"

namespace {

MicroastDtype map_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return MICROAST_F32;
    case at::kHalf: return MICROAST_F16;
    case at::kBFloat16: return MICROAST_BF16;
    default: TORCH_CHECK(false, "microast CUDA ops take float32, float16 or bfloat16 maps, got ", x.scalar_type());
  }
}

void check_map(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "microast CUDA ops take CUDA tensors, got one on ", x.device());
  TORCH_CHECK(x.dim() == 4 && x.size(3) == MICROAST_CHANNELS && x.is_contiguous(),
              "expected a contiguous NHWC map [N, H, W, 64], got sizes ", x.sizes());
  TORCH_CHECK(x.size(1) >= 2 && x.size(2) >= 2, "reflection padding needs maps of at least 2x2, got ", x.sizes());
}

// A contiguous fp32 operand of ``numel`` elements on like's device (the kernels index it without bounds).
const float* fp32(const at::Tensor& t, const char* name, const at::Tensor& like, int64_t numel) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device() == like.device(), name,
              " must be a contiguous float32 tensor on ", like.device(), ", got ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.numel() == numel, name, " must have ", numel, " elements, got sizes ", t.sizes());
  return t.data_ptr<float>();
}

// Per-channel signal rows [1 or n, 64] fp32 (a row per sample, or one broadcast); returns the row count.
int signal_rows(const at::Tensor& t, const char* name, const at::Tensor& like, int64_t n, bool broadcast) {
  const int64_t rows = t.numel() / MICROAST_CHANNELS;
  TORCH_CHECK(t.numel() % MICROAST_CHANNELS == 0 && (rows == n || (broadcast && rows == 1)), name, " must be [",
              broadcast ? "1 or " : "", n, ", 64], got sizes ", t.sizes());
  fp32(t, name, like, t.numel());
  return static_cast<int>(rows);
}

// An operand the kernels read 16 bytes a load must start on a 16-byte boundary (fresh tensors do).
void check_aligned16(const at::Tensor& t, const char* name, const char* hint) {
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, name, " must be 16-byte aligned (", hint,
              " makes a fresh tensor)");
}

// An operand the kernels copy 16 bytes a load: the map's dtype, contiguous, ``numel`` elements, aligned.
const void* packed(const at::Tensor& t, const char* name, const at::Tensor& like, int64_t numel, const char* hint) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.is_contiguous() && t.device() == like.device() &&
                  t.numel() == numel,
              name, " must be a contiguous ", like.scalar_type(), " tensor of ", numel, " elements on ", like.device(),
              " (", hint, "), got ", t.scalar_type(), " sizes ", t.sizes(), " on ", t.device());
  check_aligned16(t, name, hint);
  return t.data_ptr();
}

std::tuple<at::Tensor, at::Tensor> instance_stats(const at::Tensor& x) {
  check_map(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int n = static_cast<int>(x.size(0));
  const long long pixels = x.size(1) * x.size(2);
  const auto options = x.options().dtype(at::kFloat);
  at::Tensor partials = at::empty({static_cast<int64_t>(microast_stats_partials_size(n, pixels))}, options);
  at::Tensor mean = at::empty({n, MICROAST_CHANNELS}, options), std = at::empty({n, MICROAST_CHANNELS}, options);
  C10_CUDA_CHECK(microast_instance_stats(map_dtype(x), x.data_ptr(), n, pixels, 1e-5f, partials.data_ptr<float>(),
                                         mean.data_ptr<float>(), std.data_ptr<float>(),
                                         c10::cuda::getCurrentCUDAStream()));
  return {mean, std};
}

at::Tensor resblock(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                    const at::Tensor& b2, const std::optional<at::Tensor>& x_mean,
                    const std::optional<at::Tensor>& x_std, const std::optional<at::Tensor>& s_mean,
                    const std::optional<at::Tensor>& s_std, const std::optional<at::Tensor>& alpha,
                    const std::optional<at::Tensor>& filt_w, const std::optional<at::Tensor>& filt_b) {
  check_map(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool featmod = x_mean.has_value();
  TORCH_CHECK(featmod == (x_std && s_mean && s_std && alpha), "FeatMod takes all five of x_mean, x_std, s_mean, s_std, alpha or none");
  TORCH_CHECK(filt_w.has_value() == filt_b.has_value(), "FilterMod takes both filt_w and filt_b or neither");
  const int n = static_cast<int>(x.size(0));
  MicroastModulation mod{nullptr, nullptr, nullptr, nullptr, 1, nullptr, 1, nullptr, nullptr, 1};
  if (featmod) {
    signal_rows(*x_mean, "x_mean", x, n, false);
    signal_rows(*x_std, "x_std", x, n, false);
    mod.style_batch = signal_rows(*s_mean, "s_mean", x, n, true);
    TORCH_CHECK(signal_rows(*s_std, "s_std", x, n, true) == mod.style_batch, "s_std must have s_mean's rows");
    TORCH_CHECK(alpha->numel() == 1 || alpha->numel() == n, "alpha must have 1 or ", n, " elements, got ", alpha->numel());
    fp32(*alpha, "alpha", x, alpha->numel());
    mod.alpha_batch = static_cast<int>(alpha->numel());
    mod.x_mean = x_mean->data_ptr<float>(), mod.x_std = x_std->data_ptr<float>();
    mod.s_mean = s_mean->data_ptr<float>(), mod.s_std = s_std->data_ptr<float>(), mod.alpha = alpha->data_ptr<float>();
  }
  if (filt_w.has_value()) {
    mod.filt_batch = signal_rows(*filt_w, "filt_w", x, n, true);
    TORCH_CHECK(signal_rows(*filt_b, "filt_b", x, n, true) == mod.filt_batch, "filt_b must have filt_w's rows");
    mod.filt_w = filt_w->data_ptr<float>(), mod.filt_b = filt_b->data_ptr<float>();
  }
  constexpr int64_t kConv = 9 * MICROAST_CHANNELS * MICROAST_CHANNELS;
  const char* hint = "pack_residual_block: [9 taps, 64 in, 64 out] in the map dtype";
  at::Tensor scratch = at::empty_like(x), out = at::empty_like(x);
  C10_CUDA_CHECK(microast_resblock(map_dtype(x), x.data_ptr(), packed(w1, "w1", x, kConv, hint),
                                   fp32(b1, "b1", x, MICROAST_CHANNELS), packed(w2, "w2", x, kConv, hint),
                                   fp32(b2, "b2", x, MICROAST_CHANNELS), mod, n, static_cast<int>(x.size(1)),
                                   static_cast<int>(x.size(2)), scratch.data_ptr(), out.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor decoder_tail(const at::Tensor& x, const at::Tensor& wg1, const at::Tensor& bg1, const at::Tensor& w1,
                        const at::Tensor& b1, const at::Tensor& wg2, const at::Tensor& bg2, const at::Tensor& w2,
                        const at::Tensor& b2, const at::Tensor& w9, const at::Tensor& b9,
                        const at::Tensor& wg1_phase, const at::Tensor& wg2_phase,
                        const std::optional<at::Tensor>& w9_mma) {
  check_map(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool tensor_cores = x.scalar_type() != at::kFloat;
  TORCH_CHECK(w9_mma.has_value() == tensor_cores, "w9_mma (pack_conv9x9_out) is for fp16/bf16 maps, and only for them");
  const MicroastTailWeights weights{
      fp32(wg1, "wg1", x, 32 * 2 * 9), fp32(bg1, "bg1", x, 32), fp32(w1, "w1", x, 32 * 32), fp32(b1, "b1", x, 32),
      fp32(wg2, "wg2", x, 16 * 2 * 9), fp32(bg2, "bg2", x, 16), fp32(w2, "w2", x, 16 * 16), fp32(b2, "b2", x, 16),
      fp32(w9, "w9", x, 3 * 16 * 81), fp32(b9, "b9", x, 3),
      fp32(wg1_phase, "wg1_phase", x, 4 * 9 * 64), fp32(wg2_phase, "wg2_phase", x, 4 * 9 * 32),
      tensor_cores ? packed(*w9_mma, "w9_mma", x, 81 * 16 * 16, "pack_conv9x9_out: [81 taps, 16 in, 16 out]") : nullptr};
  for (const auto& [t, name] : {std::pair{&w1, "w1"}, {&w2, "w2"}, {&wg1_phase, "wg1_phase"}, {&wg2_phase, "wg2_phase"}})
    check_aligned16(*t, name, "tail_operands");
  check_aligned16(x, "x", "clone()");  // its pixels are read 4 channels a load
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2);
  at::Tensor out = at::empty({n, 3, 4 * h, 4 * w}, x.options());
  C10_CUDA_CHECK(microast_decoder_tail(map_dtype(x), x.data_ptr(), weights, static_cast<int>(n), static_cast<int>(h),
                                       static_cast<int>(w), out.data_ptr(),
                                       c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor encoder_head(const at::Tensor& image, const at::Tensor& w9, const at::Tensor& b9, const at::Tensor& wg1,
                        const at::Tensor& bg1, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& wg2,
                        const at::Tensor& bg2, const at::Tensor& w2, const at::Tensor& b2,
                        const std::optional<at::Tensor>& w9_mma) {
  TORCH_CHECK(image.is_cuda() && image.dim() == 4 && image.size(1) == 3 && image.is_contiguous(),
              "expected a contiguous CUDA image [N, 3, H, W], got sizes ", image.sizes(), " on ", image.device());
  TORCH_CHECK(image.size(2) >= 5 && image.size(3) >= 5, "the 9x9 reflection padding needs images of at least 5x5");
  const c10::cuda::CUDAGuard guard(image.device());
  const bool tensor_cores = image.scalar_type() != at::kFloat;
  TORCH_CHECK(w9_mma.has_value() == tensor_cores, "w9_mma (pack_conv9x9_im2col) is for fp16/bf16 images, and only for them");
  const MicroastHeadWeights weights{
      fp32(w9, "w9", image, 16 * 3 * 81), fp32(b9, "b9", image, 16), fp32(wg1, "wg1", image, 32 * 9),
      fp32(bg1, "bg1", image, 32), fp32(w1, "w1", image, 32 * 32), fp32(b1, "b1", image, 32),
      fp32(wg2, "wg2", image, 64 * 9), fp32(bg2, "bg2", image, 64), fp32(w2, "w2", image, 64 * 64),
      fp32(b2, "b2", image, 64),
      tensor_cores ? packed(*w9_mma, "w9_mma", image, 256 * 16, "pack_conv9x9_im2col: [256 taps, 16 out]") : nullptr};
  check_aligned16(w9, "w9", "head_operands");
  check_aligned16(w2, "w2", "head_operands");
  const int64_t n = image.size(0), h = image.size(2), w = image.size(3);
  const int64_t half_h = (h + 1) / 2, half_w = (w + 1) / 2;
  at::Tensor half = at::empty({n, half_h, half_w, 32}, image.options());
  at::Tensor out = at::empty({n, (half_h + 1) / 2, (half_w + 1) / 2, MICROAST_CHANNELS}, image.options());
  C10_CUDA_CHECK(microast_encoder_head(map_dtype(image), image.data_ptr(), weights, static_cast<int>(n),
                                       static_cast<int>(h), static_cast<int>(w), half.data_ptr(), out.data_ptr(),
                                       c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(microast, m) {
  m.def("cuda_instance_stats(Tensor x) -> (Tensor, Tensor)");
  m.def("cuda_resblock(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor? x_mean, Tensor? x_std, "
        "Tensor? s_mean, Tensor? s_std, Tensor? alpha, Tensor? filt_w, Tensor? filt_b) -> Tensor");
  m.def("cuda_encoder_head(Tensor image, Tensor w9, Tensor b9, Tensor wg1, Tensor bg1, Tensor w1, Tensor b1, "
        "Tensor wg2, Tensor bg2, Tensor w2, Tensor b2, Tensor? w9_mma) -> Tensor");
  m.def("cuda_decoder_tail(Tensor x, Tensor wg1, Tensor bg1, Tensor w1, Tensor b1, Tensor wg2, Tensor bg2, "
        "Tensor w2, Tensor b2, Tensor w9, Tensor b9, Tensor wg1_phase, Tensor wg2_phase, Tensor? w9_mma) -> Tensor");
}

TORCH_LIBRARY_IMPL(microast, CUDA, m) {
  m.impl("cuda_instance_stats", &instance_stats);
  m.impl("cuda_resblock", &resblock);
  m.impl("cuda_encoder_head", &encoder_head);
  m.impl("cuda_decoder_tail", &decoder_tail);
}

// ``import microast_fast._C`` loads the library, which registers the ops above.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) { module.doc() = "microast-fast CUDA kernels (ops in torch.ops.microast)"; }
