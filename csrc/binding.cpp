// The one file that knows about torch: tensors in, raw pointers and the current stream out to the
// kernels of microast_kernels.h. Ops live in the ``microast`` namespace beside the Triton ones (hence a
// FRAGMENT); their fake implementations are registered from Python (microast_fast/cuda_backend.py).
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

const float* fp32(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& like) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->device() == like.device(), name,
              " must be a contiguous float32 tensor on ", like.device());
  return t->data_ptr<float>();
}

const float* fp32(const at::Tensor& t, const char* name, const at::Tensor& like) {
  return fp32(std::optional<at::Tensor>(t), name, like);
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
  for (const at::Tensor* w : {&w1, &w2}) {
    TORCH_CHECK(w->scalar_type() == at::kFloat && w->is_contiguous() && w->numel() == 9 * 64 * 64,
                "weights must be packed float32 [9, 64, 64] (pack_conv3x3_weight)");
  }
  const bool featmod = x_mean.has_value();
  TORCH_CHECK(featmod == (x_std && s_mean && s_std && alpha), "FeatMod takes all five of x_mean, x_std, s_mean, s_std, alpha or none");
  TORCH_CHECK(filt_w.has_value() == filt_b.has_value(), "FilterMod takes both filt_w and filt_b or neither");
  const int n = static_cast<int>(x.size(0));
  MicroastModulation mod{fp32(x_mean, "x_mean", x), fp32(x_std, "x_std", x), fp32(s_mean, "s_mean", x),
                         fp32(s_std, "s_std", x), featmod ? static_cast<int>(s_mean->size(0)) : 1,
                         fp32(alpha, "alpha", x), featmod ? static_cast<int>(alpha->numel()) : 1,
                         fp32(filt_w, "filt_w", x), fp32(filt_b, "filt_b", x),
                         filt_w ? static_cast<int>(filt_w->size(0)) : 1};
  at::Tensor scratch = at::empty_like(x), out = at::empty_like(x);
  C10_CUDA_CHECK(microast_resblock(map_dtype(x), x.data_ptr(), fp32(w1, "w1", x), fp32(b1, "b1", x),
                                   fp32(w2, "w2", x), fp32(b2, "b2", x), mod, n, static_cast<int>(x.size(1)),
                                   static_cast<int>(x.size(2)), scratch.data_ptr(), out.data_ptr(),
                                   c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor decoder_tail(const at::Tensor& x, const at::Tensor& wg1, const at::Tensor& bg1, const at::Tensor& w1,
                        const at::Tensor& b1, const at::Tensor& wg2, const at::Tensor& bg2, const at::Tensor& w2,
                        const at::Tensor& b2, const at::Tensor& w9, const at::Tensor& b9) {
  check_map(x);
  const c10::cuda::CUDAGuard guard(x.device());
  const MicroastTailWeights weights{fp32(wg1, "wg1", x), fp32(bg1, "bg1", x), fp32(w1, "w1", x), fp32(b1, "b1", x),
                                    fp32(wg2, "wg2", x), fp32(bg2, "bg2", x), fp32(w2, "w2", x), fp32(b2, "b2", x),
                                    fp32(w9, "w9", x), fp32(b9, "b9", x)};
  const int64_t n = x.size(0), h = x.size(1), w = x.size(2);
  at::Tensor out = at::empty({n, 3, 4 * h, 4 * w}, x.options());
  C10_CUDA_CHECK(microast_decoder_tail(map_dtype(x), x.data_ptr(), weights, static_cast<int>(n), static_cast<int>(h),
                                       static_cast<int>(w), out.data_ptr(),
                                       c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor encoder_head(const at::Tensor& image, const at::Tensor& w9, const at::Tensor& b9, const at::Tensor& wg1,
                        const at::Tensor& bg1, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& wg2,
                        const at::Tensor& bg2, const at::Tensor& w2, const at::Tensor& b2) {
  TORCH_CHECK(image.is_cuda() && image.dim() == 4 && image.size(1) == 3 && image.is_contiguous(),
              "expected a contiguous CUDA image [N, 3, H, W], got sizes ", image.sizes(), " on ", image.device());
  TORCH_CHECK(image.size(2) >= 5 && image.size(3) >= 5, "the 9x9 reflection padding needs images of at least 5x5");
  const c10::cuda::CUDAGuard guard(image.device());
  const MicroastHeadWeights weights{fp32(w9, "w9", image), fp32(b9, "b9", image), fp32(wg1, "wg1", image),
                                    fp32(bg1, "bg1", image), fp32(w1, "w1", image), fp32(b1, "b1", image),
                                    fp32(wg2, "wg2", image), fp32(bg2, "bg2", image), fp32(w2, "w2", image),
                                    fp32(b2, "b2", image)};
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
        "Tensor wg2, Tensor bg2, Tensor w2, Tensor b2) -> Tensor");
  m.def("cuda_decoder_tail(Tensor x, Tensor wg1, Tensor bg1, Tensor w1, Tensor b1, Tensor wg2, Tensor bg2, "
        "Tensor w2, Tensor b2, Tensor w9, Tensor b9) -> Tensor");
}

TORCH_LIBRARY_IMPL(microast, CUDA, m) {
  m.impl("cuda_instance_stats", &instance_stats);
  m.impl("cuda_resblock", &resblock);
  m.impl("cuda_encoder_head", &encoder_head);
  m.impl("cuda_decoder_tail", &decoder_tail);
}

// ``import microast_fast._C`` loads the library, which registers the ops above.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) { module.doc() = "microast-fast CUDA kernels (ops in torch.ops.microast)"; }
