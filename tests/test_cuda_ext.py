"""The CUDA extension: build switches and errors, and the kernels' bodies run on the host (with nvcc),
everywhere; the ops and the backend on a GPU.

The kernels compile for sm_80/sm_90 in CI (`csrc/check.sh`, run by `.ci/run`), and their (block,
thread) bodies run thread by thread on the host here (`csrc/host_emulation.cpp`); the GPU tests below
run on a GPU machine (`benchmarks/gpu_run.sh`)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from microast_fast import MicroAST, MicroASTReference, dispatch
from microast_fast.backends import cuda_backend, get_backend, torch_layers
from microast_fast.reference import calc_mean_std
from microast_fast.weight_packing import pack_residual_block

from reference_check import assert_fp32_matches, psnr_8bit, reference64

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
CUDA_BACKEND = get_backend("cuda")


def gpu(test):
    """Marked ``gpu`` (benchmarks/gpu_run.sh runs ``-m gpu``) and skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason="needs a CUDA device")(test))


# --- everywhere -----------------------------------------------------------------------------------
@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
def test_backend_cuda_says_what_is_missing():
    with pytest.raises(dispatch.BackendUnavailableError, match="run on CUDA devices, not on cpu"):
        MicroAST.from_pretrained(backend="cuda")
    from microast_fast.cuda_ext import unavailable_reason
    assert "no working CUDA" in unavailable_reason()


@pytest.mark.slow  # a subprocess of several seconds: left out of the fast tier
@pytest.mark.skipif(torch.version.cuda is not None, reason="checks the CPU-only build")
def test_forced_cuda_build_fails_loudly_without_cuda_torch():
    env = dict(os.environ, MICROAST_FAST_CUDA="1")
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "has no CUDA" in result.stderr + result.stdout
    plain = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, capture_output=True, text=True)
    assert plain.returncode == 0 and plain.stdout.strip().endswith("microast-fast")


@pytest.mark.skipif(shutil.which("g++") is None or not sys.platform.startswith("linux"), reason="needs g++ on Linux")
def test_a_static_cxx_runtime_is_found_and_the_build_links_the_shared_one(tmp_path):
    """The first GPU machine's g++ linked libstdc++ statically into the extension, whose first error
    message then crashed the process. The link flags setup.py and the JIT build use (the runtime torch
    has loaded, by path) link it dynamically even under -static-libstdc++, and load() refuses a build
    that carries its own copy."""
    import runpy

    from microast_fast.cuda_ext import carries_own_cxx_runtime, loaded_cxx_runtime
    source = tmp_path / "fmt.cpp"
    source.write_text('#include <sstream>\n#include <string>\nextern "C" int fmt(long v) '
                      '{ std::ostringstream s; s << v; return (int)s.str().size(); }\n')
    link_args = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_flags")["cxx_runtime"]()
    assert link_args == [loaded_cxx_runtime()] and "libstdc++" in link_args[0]
    libs = {}
    for name, extra in (("static", []), ("linked", link_args)):
        libs[name] = tmp_path / f"{name}.so"
        subprocess.run(["g++", "-O2", "-fPIC", "-shared", str(source), "-static-libstdc++", *extra, "-o",
                        str(libs[name])], check=True)
    assert carries_own_cxx_runtime(str(libs["static"]))
    assert not carries_own_cxx_runtime(str(libs["linked"]))


class EmulatedOps:
    """The ops' contract (microast_kernels.h) in PyTorch, on NHWC maps with packed weights."""

    @staticmethod
    def cuda_instance_stats(x):
        mean, std = calc_mean_std(x.permute(0, 3, 1, 2))
        return mean.flatten(1), std.flatten(1)

    @staticmethod
    def cuda_encoder_head(image, w9, b9, wg1, bg1, w1, b1, wg2, bg2, w2, b2, w9_mma):
        import torch.nn.functional as F

        assert (w9_mma is None) == (image.dtype == torch.float32)
        if w9_mma is not None:  # [256 taps, 16 out] in the image dtype, taps 243.. zero
            assert torch.equal(w9_mma[:243], w9.to(image.dtype)) and not w9_mma[243:].any()

        def conv(t, weight, bias, stride=1, groups=1):
            return F.conv2d(F.pad(t, (weight.shape[-1] // 2,) * 4, mode="reflect"), weight, bias, stride, groups=groups)

        t = conv(image, w9.reshape(3, 9, 9, 16).permute(3, 0, 1, 2), b9).relu()  # packed [in, ky, kx, out]
        t = conv(conv(t, wg1, bg1, 2, 16).relu(), w1, b1).relu()
        t = conv(conv(t, wg2, bg2, 2, 32).relu(), w2, b2).relu()
        return t.permute(0, 2, 3, 1).contiguous()

    @staticmethod
    def cuda_decoder_tail(x, wg1, bg1, w1, b1, wg2, bg2, w2, b2, w9, b9, wg1_phase, wg2_phase, w9_mma):
        import torch.nn.functional as F
        from microast_fast.weight_packing import compose_up2_grouped3x3

        assert torch.equal(wg1_phase, compose_up2_grouped3x3(wg1)) and torch.equal(wg2_phase, compose_up2_grouped3x3(wg2))

        assert (w9_mma is None) == (x.dtype == torch.float32)
        if w9_mma is not None:  # [tap = 9 * ky + kx, in, out]: the 9x9 in the map dtype, outputs 3..15 zero
            taps = w9_mma.reshape(9, 9, 16, 16).permute(3, 2, 0, 1)
            assert torch.equal(taps[:3], w9.to(x.dtype)) and not taps[3:].any()

        def conv(t, weight, bias, groups=1):
            return F.conv2d(F.pad(t, (weight.shape[-1] // 2,) * 4, mode="reflect"), weight, bias, groups=groups)

        def up(t):
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        t = x.permute(0, 3, 1, 2)
        t = conv(conv(up(t), wg1, bg1, 32).relu(), w1.view(32, 32, 1, 1), b1).relu()
        t = conv(conv(up(t), wg2, bg2, 16).relu(), w2.view(16, 16, 1, 1), b2).relu()
        return conv(t, w9, b9)

    @staticmethod
    def cuda_resblock(x, w1, b1, w2, b2, x_mean, x_std, s_mean, s_std, alpha, filt_w, filt_b):
        import torch.nn.functional as F

        def conv(t, packed, bias):  # packed [tap = 3 * dy + dx, in, out]
            weight = packed.reshape(3, 3, 64, 64).permute(3, 2, 0, 1)
            return F.conv2d(F.pad(t, (1, 1, 1, 1), mode="reflect"), weight, bias)

        def col(t):
            return t.reshape(t.shape[0], 64, 1, 1)

        x = x.permute(0, 3, 1, 2)
        if x_mean is not None:
            ratio, a = col(s_std) / col(x_std), alpha.reshape(-1, 1, 1, 1)
            x = (a * ratio + 1 - a) * x + a * (col(s_mean) - col(x_mean) * ratio)
        w, b = (col(filt_w), col(filt_b)) if filt_w is not None else (1.0, 0.0)
        y3 = (w * conv(x, w1, b1) + b * x).relu()
        return (x + w * conv(y3, w2, b2) + b * y3).permute(0, 2, 3, 1).contiguous()


def test_backend_glue_with_emulated_ops(monkeypatch):
    """The cuda backend's stylize (head, NHWC maps, packed weights, per-sample signals, tail) with the ops
    replaced by their contract in PyTorch: the Python side is right before any GPU runs the kernels."""
    monkeypatch.setattr(cuda_backend, "load_ops", lambda: EmulatedOps)
    ref = MicroASTReference.from_pretrained()
    model = MicroAST.from_pretrained(backend="torch")
    g = torch.Generator().manual_seed(11)
    content, style = torch.rand(2, 3, 37, 29, generator=g), torch.rand(2, 3, 24, 20, generator=g)
    with torch.inference_mode():
        signals = CUDA_BACKEND.encode_style(model, style)
        out = CUDA_BACKEND.stylize(model, content, signals, torch.tensor([[[[0.9]]], [[[0.4]]]]))
        expected = torch.cat([ref(content[i:i + 1], style[i:i + 1], a) for i, a in enumerate((0.9, 0.4))])
        exact = torch.cat([reference64(ref)(content[i:i + 1].double(), style[i:i + 1].double(), a)
                           for i, a in enumerate((0.9, 0.4))])
    assert_fp32_matches(out, expected, exact, "emulated cuda ops")


# --- the kernel bodies, run on the host ----------------------------------------------------------
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


@pytest.fixture(scope="module")
def emulation(tmp_path_factory):
    """csrc/host_emulation.cpp: the kernels' (block, thread) bodies run thread by thread on the host."""
    import ctypes

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("needs nvcc (the CUDA toolkit) to build the host emulation of the kernels")
    lib = tmp_path_factory.mktemp("emulation") / "libmicroast_emulation.so"
    # -arch=sm_80: nvcc's device pass also sees the kernel bodies, and bf16 WMMA starts at sm_80.
    subprocess.run([nvcc, "-x", "cu", "-std=c++17", "-O2", "-arch=sm_80", "-Xcompiler", "-fPIC", "-shared",
                    str(ROOT / "csrc" / "host_emulation.cpp"), "-o", str(lib)], check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def ptr(t):
    import ctypes
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def pointer_table(tensors):
    """A C array of the tensors' data pointers (null for None), as the emulation's weight tables take them."""
    import ctypes
    return (ctypes.c_void_p * len(tensors))(*[None if t is None else t.data_ptr() for t in tensors])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,h,w", [(2, 5, 7), (1, 67, 130)])  # 8,710 pixels: three chunks to merge
def test_emulated_instance_stats(emulation, dtype, n, h, w):
    import ctypes

    x = (torch.randn(n, h, w, 64, generator=torch.Generator().manual_seed(h)) * 3 + 1).to(dtype)
    mean, std = torch.empty(n, 64), torch.empty(n, 64)
    assert emulation.microast_emulate_stats(DTYPE_CODES[dtype], ptr(x), n, ctypes.c_longlong(h * w),
                                            ctypes.c_float(1e-5), ptr(mean), ptr(std)) == 0
    ref_mean, ref_std = calc_mean_std(x.double().permute(0, 3, 1, 2))
    torch.testing.assert_close(mean.double(), ref_mean.view(n, 64), rtol=0, atol=2e-6)
    torch.testing.assert_close(std.double(), ref_std.view(n, 64), rtol=2e-6, atol=0)


# Measured max abs error (outputs up to 13): fp32 3.8e-6 (exact kernel); fp16 5.7e-3, bf16 6.4e-2 (tensor-core
# kernel: FeatMod's output x' is rounded to the map dtype as the products' operand, as in a half model).
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 8e-2)])
@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("n,h,w", [(1, 2, 2), (2, 9, 13), (2, 19, 23)])
def test_emulated_resblock_matches_torch(emulation, dtype, atol, modulated, n, h, w):
    """The block kernel's body against the torch backend's block (fp32 throughout); half-precision maps
    differ by the rounding of the stored input, intermediate and output (outputs reach about 12)."""

    model = MicroAST.from_pretrained(backend="torch")
    block = model.decoder.dec1
    g = torch.Generator().manual_seed(n * h * w)
    x = torch.randn(n, h, w, 64, generator=g) * 2 + 0.5
    w1, b1, w2, b2 = pack_residual_block(block, dtype, torch.float32)
    args = [None] * 4 + [1, None, 1, None, None, 1]
    with torch.no_grad():
        if modulated:
            s_mean, s_std = torch.randn(n, 64, generator=g), torch.rand(n, 64, generator=g) + 0.5
            fw, fb = torch.randn(1, 64, generator=g) * 0.5 + 1, torch.randn(1, 64, generator=g) * 0.2  # broadcast
            alpha = torch.tensor([0.7, 0.2][:n])
            mean, std = torch_layers.instance_stats(x.permute(0, 3, 1, 2))
            a, b = torch_layers.featmod_affine(mean, std, s_mean.view(n, 64, 1, 1), s_std.view(n, 64, 1, 1),
                                                alpha.view(-1, 1, 1, 1))
            expected = torch_layers.filtermod_resblock(block, x.permute(0, 3, 1, 2), a, b, fw.view(1, 64, 1, 1),
                                                        fb.view(1, 64, 1, 1))
            args = [mean.reshape(n, 64).contiguous(), std.reshape(n, 64).contiguous(), s_mean, s_std, n, alpha, n,
                    fw, fb, 1]
        else:
            expected = block(x.permute(0, 3, 1, 2))
    xd = x.to(dtype)
    scratch, out = torch.empty_like(xd), torch.empty_like(xd)
    code = emulation.microast_emulate_resblock(
        DTYPE_CODES[dtype], ptr(xd), ptr(w1), ptr(b1), ptr(w2), ptr(b2),
        *[a if isinstance(a, int) else ptr(a) for a in args], n, h, w, ptr(scratch), ptr(out))
    assert code == 0
    torch.testing.assert_close(out.float().permute(0, 3, 1, 2), expected, rtol=0, atol=atol)


# Measured max abs error against dec3 (outputs up to 0.9): fp32 6.6e-7; fp16 7.1e-4, bf16 5.6e-3 (the 9x9 on
# the tensor cores, its 16-channel input rounded to the map dtype as the reference rounds it).
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("n,h,w", [(1, 2, 2), (2, 5, 3), (1, 9, 12)])
def test_emulated_decoder_tail_matches_torch(emulation, dtype, atol, n, h, w):
    model = MicroAST.from_pretrained(backend="torch")
    x = torch.randn(n, h, w, 64, generator=torch.Generator().manual_seed(h * w)).abs() * 4  # a block output's range
    with torch.no_grad():
        expected = model.decoder.dec3(x.permute(0, 3, 1, 2))
    weights = cuda_backend.tail_operands(model, dtype)  # kept alive while the table points into it
    table = pointer_table(weights)
    xd = x.to(dtype)
    out = torch.empty(n, 3, 4 * h, 4 * w, dtype=dtype)
    assert emulation.microast_emulate_decoder_tail(DTYPE_CODES[dtype], ptr(xd), table, n, h, w, ptr(out)) == 0
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=atol)


# Measured max abs error against enc1[:10] (outputs up to 0.13): fp32 1.8e-7, fp16 6.4e-5, bf16 5.5e-4.
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.float16, 2e-4), (torch.bfloat16, 2e-3)])
@pytest.mark.parametrize("n,h,w", [(1, 5, 5), (2, 13, 11), (1, 30, 37)])
def test_emulated_encoder_head_matches_torch(emulation, dtype, atol, n, h, w):
    encoder = MicroAST.from_pretrained(backend="torch").content_encoder
    image = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    with torch.no_grad():
        expected = encoder.enc1[:10](image)
    _, out = run_emulated_head(emulation, image.to(dtype), cuda_backend.head_operands(encoder, dtype))
    torch.testing.assert_close(out.float().permute(0, 3, 1, 2), expected, rtol=0, atol=atol)


def run_emulated_head(emulation, image, weights):
    """The head kernels' bodies on the host -> (half map, quarter map), NHWC in the image's dtype."""
    n, _, h, w = image.shape
    h2, w2 = -(-h // 2), -(-w // 2)
    half, out = image.new_empty(n, h2, w2, 32), image.new_empty(n, -(-h2 // 2), -(-w2 // 2), 64)
    table = pointer_table(weights)
    assert emulation.microast_emulate_encoder_head(DTYPE_CODES[image.dtype], ptr(image), table, n, h, w, ptr(half),
                                                   ptr(out)) == 0
    return half, out


@pytest.mark.parametrize("dtype,mantissa", [(torch.float16, 10), (torch.bfloat16, 7)])
def test_emulated_head_tensor_cores_keep_the_fp32_result(emulation, dtype, mantissa):
    """A model in fp16/bf16 has its weights in that dtype, and the image is in it too: the tensor-core
    9x9 then multiplies exact operands and accumulates in fp32, so the half map must be the exact fp32
    head's on the same image and weights, rounded once to the map dtype: within half a unit in the last
    place, plus fp32 noise (1e-6; measured at most 6.9e-8 beyond the half unit)."""
    encoder = MicroAST.from_pretrained(backend="torch", dtype=dtype).content_encoder
    image = torch.rand(1, 3, 45, 62, generator=torch.Generator().manual_seed(7)).to(dtype)
    half, _ = run_emulated_head(emulation, image, cuda_backend.head_operands(encoder, dtype))
    exact, _ = run_emulated_head(emulation, image.float(), cuda_backend.head_operands(encoder, torch.float32))
    exponent = torch.floor(torch.log2(exact.abs().clamp_min(2.0 ** -14)))  # fp16's subnormals: a fixed step
    excess = (half.float() - exact).abs() - 2.0 ** (exponent - mantissa - 1)
    assert excess.max() <= 1e-6, f"{(excess > 1e-6).float().mean():.1%} of the values are more than half a unit off"


# The CUDA kernels (run on the host) against the Triton kernels (run in the interpreter), on the same
# inputs in the same dtype: two independent implementations of each op. fp32 must agree to the noise
# floor; fp16 maps differ by where each rounds its stored intermediates and by the tensor cores'
# summation order. Measured max abs differences on these inputs, fp32: resblock 5.7e-6, tail 1.3e-6,
# head 1.4e-7; fp16 (bf16 is not compared: the interpreter has no bf16 arithmetic): resblock 7.8e-3
# (outputs up to 16: one fp16 step), tail 9.8e-4 (outputs up to 0.9: two steps), head 9.2e-5 (outputs
# up to 0.12).
CROSS_FP16_ATOL = {"resblock": 1.6e-2, "tail": 2e-3, "head": 4e-4}


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_kernels_match_the_triton_kernels(emulation, dtype):
    pytest.importorskip("triton")
    from microast_fast.backends import triton_backend
    from microast_fast.kernels import decoder_tail, encoder_head, filtermod_resblock

    def check(got, expected, op):
        atol = 1e-5 if dtype == torch.float32 else CROSS_FP16_ATOL[op]
        torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=atol, msg=lambda m: f"{op}: {m}")

    model = MicroAST.from_pretrained(backend="torch", dtype=dtype)
    g = torch.Generator().manual_seed(5)
    n, h, w = 2, 19, 23  # 3x2 tensor-core tiles, 3x3 exact ones; both partial at the edges

    block = model.decoder.dec1
    x = (torch.randn(n, h, w, 64, generator=g) * 2 + 0.5).to(dtype)
    s_mean, s_std = torch.randn(n, 64, generator=g), torch.rand(n, 64, generator=g) + 0.5
    fw, fb = torch.randn(n, 64, generator=g) * 0.5 + 1, torch.randn(n, 64, generator=g) * 0.2
    alpha = torch.tensor([0.7, 0.2])
    mean, std = (t.reshape(n, 64).contiguous() for t in torch_layers.instance_stats(x.float().permute(0, 3, 1, 2)))
    w1, b1, w2, b2 = pack_residual_block(block, dtype, torch.float32)
    scratch, out = torch.empty_like(x), torch.empty_like(x)
    assert emulation.microast_emulate_resblock(
        DTYPE_CODES[dtype], ptr(x), ptr(w1), ptr(b1), ptr(w2), ptr(b2), ptr(mean), ptr(std), ptr(s_mean), ptr(s_std), n,
        ptr(alpha), n, ptr(fw), ptr(fb), n, n, h, w, ptr(scratch), ptr(out)) == 0
    expected, _, _ = filtermod_resblock.filtermod_resblock(
        x, *pack_residual_block(block, dtype, dtype), mean, std, s_mean, s_std, alpha, fw.to(dtype), fb.to(dtype), False)
    check(out, expected, "resblock")

    # A 72x76 image: the Triton interpreter's middle 32x32 tile and the CUDA kernel's pixels off the
    # border take the phase-by-phase form of bilinear x2 + grouped 3x3, the rest the general one.
    x = (torch.randn(1, 18, 19, 64, generator=g).abs() * 4).to(dtype)
    out = torch.empty(1, 3, 72, 76, dtype=dtype)
    weights = cuda_backend.tail_operands(model, dtype)  # kept alive while the table points into it
    table = pointer_table(weights)
    assert emulation.microast_emulate_decoder_tail(DTYPE_CODES[dtype], ptr(x), table, 1, 18, 19, ptr(out)) == 0
    check(out, decoder_tail.decoder_tail(x, *triton_backend.decoder_tail_operands(model.decoder.dec3, dtype)), "tail")

    image = torch.rand(1, 3, 37, 70, generator=g).to(dtype)
    weights = cuda_backend.head_operands(model.content_encoder, dtype)
    half, out = torch.empty(1, 19, 35, 32, dtype=dtype), torch.empty(1, 10, 18, 64, dtype=dtype)
    table = pointer_table(weights)
    assert emulation.microast_emulate_encoder_head(DTYPE_CODES[dtype], ptr(image), table, 1, 37, 70, ptr(half),
                                                   ptr(out)) == 0
    check(out, encoder_head.encoder_head(image, *triton_backend.encoder_head_operands(model.content_encoder.enc1, dtype)),
          "head")


class HostKernelOps:
    """The extension's ops with the CUDA kernels' own bodies run on the host, in the maps' dtype."""

    def __init__(self, lib):
        self.lib = lib

    def cuda_encoder_head(self, image, *weights):
        return run_emulated_head(self.lib, image, weights)[1]

    def cuda_instance_stats(self, x):
        import ctypes
        n, h, w, _ = x.shape
        mean, std = torch.empty(n, 64), torch.empty(n, 64)
        assert self.lib.microast_emulate_stats(DTYPE_CODES[x.dtype], ptr(x), n, ctypes.c_longlong(h * w),
                                               ctypes.c_float(1e-5), ptr(mean), ptr(std)) == 0
        return mean, std

    def cuda_resblock(self, x, w1, b1, w2, b2, x_mean, x_std, s_mean, s_std, alpha, filt_w, filt_b):
        n, h, w, _ = x.shape
        scratch, out = torch.empty_like(x), torch.empty_like(x)
        batch = lambda t: 1 if t is None else t.shape[0]  # noqa: E731
        assert self.lib.microast_emulate_resblock(
            DTYPE_CODES[x.dtype], ptr(x), ptr(w1), ptr(b1), ptr(w2), ptr(b2), ptr(x_mean), ptr(x_std), ptr(s_mean),
            ptr(s_std), batch(s_mean), ptr(alpha), batch(alpha), ptr(filt_w), ptr(filt_b), batch(filt_w), n, h, w,
            ptr(scratch), ptr(out)) == 0
        return out

    def cuda_decoder_tail(self, x, *weights):
        n, h, w, _ = x.shape
        out = x.new_empty(n, 3, 4 * h, 4 * w)
        table = pointer_table(weights)
        assert self.lib.microast_emulate_decoder_tail(DTYPE_CODES[x.dtype], ptr(x), table, n, h, w, ptr(out)) == 0
        return out


def test_cuda_backend_with_its_kernels_run_on_the_host(emulation, monkeypatch):
    """The whole cuda backend, every kernel body run on the host, against the reference: batch 2 with
    distinct styles and alphas, an odd size."""
    monkeypatch.setattr(cuda_backend, "load_ops", lambda: HostKernelOps(emulation))
    model = MicroAST.from_pretrained(backend="torch")
    g = torch.Generator().manual_seed(12)
    content, style = torch.rand(2, 3, 45, 38, generator=g), torch.rand(2, 3, 24, 28, generator=g)
    alphas = (1.0, 0.6)
    with torch.inference_mode():
        signals = CUDA_BACKEND.encode_style(model, style)
        out = CUDA_BACKEND.stylize(model, content, signals, torch.tensor(alphas).view(2, 1, 1, 1))
    assert_fp32_matches(out, *reference_per_sample(content, style, alphas), "cuda kernels on the host")


def reference_per_sample(content, style, alphas):
    """The fp32 reference's output and its float64 twin's, sample by sample (the reference takes one
    float alpha); a style of batch 1 serves every sample."""
    ref = MicroASTReference.from_pretrained()
    ref64 = reference64(ref)
    styles = [style[i:i + 1] if style.shape[0] > 1 else style for i in range(len(alphas))]
    with torch.inference_mode():
        expected = torch.cat([ref(content[i:i + 1], s, a) for i, (s, a) in enumerate(zip(styles, alphas))])
        exact = torch.cat([ref64(content[i:i + 1].double(), s.double(), a)
                           for i, (s, a) in enumerate(zip(styles, alphas))])
    return expected, exact


@pytest.mark.parametrize("maps", [2, 1])
def test_streaming_with_the_cuda_stages_on_the_host(emulation, monkeypatch, maps):
    """The tiled executor with the CUDA kernels (run on the host) as its stages, tiles of 4 quarter-res
    pixels on a 20x18 quarter-res map: interior tiles' halos stop short of the border in every pass, so
    a halo one pixel short fails this (measured: 2e-4 to 0.27 off). maps=1 recomputes block 1."""
    from microast_fast import streaming
    monkeypatch.setattr(cuda_backend, "load_ops", lambda: HostKernelOps(emulation))
    model = MicroAST.from_pretrained(backend="torch")
    g = torch.Generator().manual_seed(21)
    content, style = torch.rand(2, 3, 80, 70, generator=g), torch.rand(1, 3, 12, 10, generator=g)
    alphas = (0.9, 0.4)
    with torch.inference_mode():
        signals = CUDA_BACKEND.encode_style(model, style)
        out = streaming.stylize(CUDA_BACKEND.tile_stages(model), content, signals,
                                torch.tensor(alphas).view(2, 1, 1, 1), streaming.Plan(4, maps))
    assert_fp32_matches(out, *reference_per_sample(content, style, alphas),
                        f"cuda stages, tiles of 4, {maps} maps kept")


# Measured PSNR against the fp32 reference (chelsea.png, short side 96): fp16 57.0 dB, bf16 44.5 dB
# (the torch backend in the same dtypes on this CPU: 54.8 and 34.3 dB).
@pytest.mark.parametrize("dtype,min_psnr", [(torch.float16, 45.0), (torch.bfloat16, 38.0)])
def test_cuda_backend_half_precision_on_the_host(emulation, monkeypatch, dtype, min_psnr):
    """The whole cuda backend in fp16 / bf16 (the residual blocks on the tensor-core path), every kernel
    body run on the host, against the fp32 reference on a bundled photograph: the issue's PSNR bar."""
    from microast_fast.images import asset_path
    from microast_fast.images import load_image
    monkeypatch.setattr(cuda_backend, "load_ops", lambda: HostKernelOps(emulation))
    content = load_image(asset_path("chelsea.png"), 96)
    style = load_image(asset_path("hubble_deep_field.jpg"), 64)
    model = MicroAST.from_pretrained(backend="torch", dtype=dtype)
    with torch.inference_mode():
        signals = CUDA_BACKEND.encode_style(model, style.to(dtype))
        out = CUDA_BACKEND.stylize(model, content.to(dtype), signals, 1.0)
        expected = MicroASTReference.from_pretrained()(content, style, 1.0)
    assert out.dtype == dtype
    assert psnr_8bit(out, expected) >= min_psnr


# --- on a GPU -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ops():
    return cuda_backend.load_ops()


def nhwc(seed, n, h, w, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, h, w, 64, generator=g) * 2 + 0.5).to("cuda", dtype)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,h,w", [(2, 5, 7), (1, 270, 480), (1, 67, 1024)])
def test_instance_stats_op(ops, dtype, n, h, w):
    x = nhwc(h * w, n, h, w, dtype)
    mean, std = ops.cuda_instance_stats(x)
    ref_mean, ref_std = calc_mean_std(x.double().permute(0, 3, 1, 2))
    torch.testing.assert_close(mean.double(), ref_mean.view(n, 64), rtol=0, atol=1e-5)
    torch.testing.assert_close(std.double(), ref_std.view(n, 64), rtol=1e-5, atol=1e-6)


@gpu
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 8e-2)])
@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("n,h,w", [(2, 2, 2), (2, 9, 13), (1, 135, 240)])
def test_resblock_op_matches_torch(ops, dtype, atol, modulated, n, h, w):
    """As test_emulated_resblock_matches_torch, on the device: the same signal ranges and bounds."""
    model = MicroAST.from_pretrained(backend="torch", device="cuda")
    block = model.decoder.dec1
    x = nhwc(n * h + w, n, h, w, dtype)
    x32 = x.float().permute(0, 3, 1, 2)  # the reference sees the input as rounded to the map dtype
    g = torch.Generator().manual_seed(3)
    if modulated:
        s_mean, s_std = torch.randn(n, 64, 1, 1, generator=g).cuda(), torch.rand(n, 64, 1, 1, generator=g).cuda() + 0.5
        fw = torch.randn(n, 64, 1, 1, generator=g).cuda() * 0.5 + 1
        fb = torch.randn(n, 64, 1, 1, generator=g).cuda() * 0.2
        alpha = torch.tensor([0.7, 0.2][:n], device="cuda")
        mean, std = torch_layers.instance_stats(x32)
        a, b = torch_layers.featmod_affine(mean, std, s_mean, s_std, alpha.view(-1, 1, 1, 1))
        with torch.no_grad():
            expected = torch_layers.filtermod_resblock(block, x32, a, b, fw, fb)
        flat = lambda t: t.reshape(n, 64).contiguous()  # noqa: E731
        got = ops.cuda_resblock(x, *pack_residual_block(block, x.dtype, torch.float32), flat(mean), flat(std),
                                flat(s_mean), flat(s_std), alpha, flat(fw), flat(fb))
    else:
        with torch.no_grad():
            expected = block(x32)
        got = ops.cuda_resblock(x, *pack_residual_block(block, x.dtype, torch.float32), *(None,) * 7)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float().permute(0, 3, 1, 2), expected, rtol=0, atol=atol)


# A unit in the last place of each map dtype, relative: the device's tensor cores sum in another order
# than the host's loops, so a rounding to the map dtype may go the other way.
LAST_PLACE = {torch.float32: 1e-6, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}


@gpu
@pytest.mark.parametrize("dtype,head_atol,tail_atol", [(torch.float32, 1e-6, 1e-5), (torch.float16, 2e-4, 2e-3),
                                                        (torch.bfloat16, 2e-3, 1e-2)])
@pytest.mark.parametrize("n,h,w", [(2, 5, 7), (1, 67, 130)])
def test_head_and_tail_ops_match_torch_and_their_host_runs(ops, emulation, dtype, head_atol, tail_atol, n, h, w):
    """The head and tail ops on the device against the PyTorch layers (the emulated tests' bounds), and
    against their own kernel bodies run on the host: the same arithmetic, so a race or a missing barrier
    shows here as values far outside one rounding."""
    model = MicroAST.from_pretrained(backend="torch")
    host = HostKernelOps(emulation)
    g = torch.Generator().manual_seed(n * h + w)

    image = torch.rand(n, 3, h, w, generator=g)
    head = cuda_backend.head_operands(model.content_encoder, dtype)
    got = ops.cuda_encoder_head(image.to("cuda", dtype), *[t if t is None else t.cuda() for t in head]).cpu()
    with torch.no_grad():
        expected = model.content_encoder.enc1[:10](image)
    torch.testing.assert_close(got.float().permute(0, 3, 1, 2), expected, rtol=0, atol=head_atol)
    assert_matches_host_run(got, host.cuda_encoder_head(image.to(dtype), *head), dtype, head_atol)

    x = torch.randn(n, -(-h // 4), -(-w // 4), 64, generator=g).abs() * 4  # a block output's range
    tail = cuda_backend.tail_operands(model, dtype)
    got = ops.cuda_decoder_tail(x.to("cuda", dtype), *[t if t is None else t.cuda() for t in tail]).cpu()
    with torch.no_grad():
        expected = model.decoder.dec3(x.permute(0, 3, 1, 2))
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=tail_atol)
    assert_matches_host_run(got, host.cuda_decoder_tail(x.to(dtype), *tail), dtype, tail_atol)


def assert_matches_host_run(got, host, dtype, atol):
    """The device against its kernel bodies run on the host. In fp32 every value is within a rounding.
    Half maps round intermediate maps too (the head's half-level map): where the device's sum and the
    host's round one of those the other way, the difference propagates to the outputs that read it.
    On an H100 (2026-11-26) that was 13 of 35,904 fp16 head outputs at 67x130, up to 3.1e-5 off. A race
    or a missing barrier spoils whole tiles: so in half precision at most 0.1% of the outputs may be
    beyond one rounding, and none beyond the bound against PyTorch."""
    got, host = got.float(), host.float()
    beyond = ((got - host).abs() > LAST_PLACE[dtype] * host.abs() + 1e-6).sum().item()
    if dtype == torch.float32:
        assert beyond == 0, f"{beyond} of {got.numel()} outputs beyond a rounding of the host run"
    else:
        assert beyond <= 1e-3 * got.numel(), f"{beyond} of {got.numel()} outputs beyond a rounding of the host run"
        torch.testing.assert_close(got, host, rtol=0, atol=atol)


@gpu
def test_ops_refuse_what_the_kernels_would_misread(ops):
    """The ops are public: operands the kernels would read out of bounds or misaligned are refused with
    the reason, and an empty batch launches nothing."""
    model = MicroAST.from_pretrained(backend="torch", device="cuda")
    x = nhwc(3, 2, 5, 6)
    w1, b1, w2, b2 = pack_residual_block(model.decoder.dec1, x.dtype, torch.float32)
    stats = [torch.rand(2, 64, device="cuda") + 0.5 for _ in range(2)]
    signals = [torch.rand(3, 64, device="cuda") + 0.5 for _ in range(2)]  # 3 rows for a batch of 2
    alpha = torch.ones(2, device="cuda")
    with pytest.raises(RuntimeError, match=r"s_mean must be \[1 or 2, 64\]"):
        torch.ops.microast.cuda_resblock(x, w1, b1, w2, b2, *stats, *signals, alpha, None, None)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        shifted = torch.empty(w1.numel() + 1, device="cuda")[1:].view_as(w1).copy_(w1)
        torch.ops.microast.cuda_resblock(x, shifted, b1, w2, b2, *(None,) * 7)
    with pytest.raises(RuntimeError, match="w9_mma"):
        torch.ops.microast.cuda_decoder_tail(x.half(), *cuda_backend.tail_operands(model, torch.float32))
    image = torch.rand(1, 3, 9, 9, device="cuda")
    with pytest.raises(RuntimeError, match="w9_mma"):
        torch.ops.microast.cuda_encoder_head(image.half(), *cuda_backend.head_operands(model.content_encoder, torch.float32))
    with pytest.raises(RuntimeError, match="w9_mma"):
        torch.ops.microast.cuda_encoder_head(image, *cuda_backend.head_operands(model.content_encoder, torch.float16))
    empty = torch.ops.microast.cuda_resblock(x[:0], w1, b1, w2, b2, *(None,) * 7)
    assert empty.shape == (0, 5, 6, 64)


@gpu
def test_opcheck(ops):
    x = nhwc(1, 2, 6, 5)
    torch.library.opcheck(torch.ops.microast.cuda_instance_stats, (x,))
    model = MicroAST.from_pretrained(backend="torch", device="cuda")
    for maps in (x, x.half()):
        w1, b1, w2, b2 = pack_residual_block(model.decoder.dec1, maps.dtype, torch.float32)
        torch.library.opcheck(torch.ops.microast.cuda_resblock, (maps, w1, b1, w2, b2) + (None,) * 7)
        torch.library.opcheck(torch.ops.microast.cuda_decoder_tail, (maps, *cuda_backend.tail_operands(model, maps.dtype)))
    for image in (torch.rand(2, 3, 13, 11, device="cuda"), torch.rand(2, 3, 13, 11, device="cuda").half()):
        torch.library.opcheck(torch.ops.microast.cuda_encoder_head,
                              (image, *cuda_backend.head_operands(model.content_encoder, image.dtype)))


@gpu
@pytest.mark.parametrize("h,w", [(1080, 1920), (2160, 4096), (37, 53)])
def test_model_fp32_matches_reference(h, w):
    ref = MicroASTReference.from_pretrained().cuda()
    fast = MicroAST.from_pretrained(backend="cuda", device="cuda")
    g = torch.Generator().manual_seed(h)
    content, style = torch.rand(1, 3, h, w, generator=g).cuda(), torch.rand(1, 3, 256, 256, generator=g).cuda()
    with torch.inference_mode():
        out, expected = fast(content, style, 0.8), ref(content, style, 0.8)
        exact = reference64(ref)(content.double(), style.double(), 0.8)
    assert_fp32_matches(out, expected, exact, f"cuda {h}x{w}")


@gpu
def test_batch_with_distinct_styles_and_alphas():
    ref = MicroASTReference.from_pretrained().cuda()
    fast = MicroAST.from_pretrained(backend="cuda", device="cuda")
    g = torch.Generator().manual_seed(5)
    content, style = torch.rand(2, 3, 61, 47, generator=g).cuda(), torch.rand(2, 3, 40, 40, generator=g).cuda()
    with torch.inference_mode():
        out = fast(content, style, torch.tensor([0.9, 0.3], device="cuda"))
        expected = torch.cat([ref(content[i:i + 1], style[i:i + 1], a) for i, a in enumerate((0.9, 0.3))])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


@gpu
def test_streaming_matches_the_reference():
    """Tiles of 64 quarter-res pixels at 1080p: 5x8 tiles, interior halos in every pass."""
    ref = MicroASTReference.from_pretrained().cuda()
    tiled = MicroAST.from_pretrained(backend="cuda", device="cuda", tile_size=64)
    g = torch.Generator().manual_seed(6)
    content, style = torch.rand(1, 3, 1080, 1920, generator=g).cuda(), torch.rand(1, 3, 256, 256, generator=g).cuda()
    with torch.inference_mode():
        out, expected = tiled(content, style, 0.8), ref(content, style, 0.8)
        exact = reference64(ref)(content.double(), style.double(), 0.8)
    assert_fp32_matches(out, expected, exact, "cuda streaming, tiles of 64")


@gpu
@pytest.mark.parametrize("dtype,min_psnr", [(torch.float16, 45.0), (torch.bfloat16, 38.0)])
def test_half_precision_quality(dtype, min_psnr):
    from microast_fast.images import asset_path
    from microast_fast.images import load_image, to_uint8
    content = load_image(asset_path("chelsea.png")).cuda()
    style = load_image(asset_path("hubble_deep_field.jpg"), 512).cuda()
    with torch.inference_mode():
        full = to_uint8(MicroASTReference.from_pretrained().cuda()(content, style)[0]).astype(float)
        half = MicroAST.from_pretrained(backend="cuda", device="cuda", dtype=dtype)
        low = to_uint8(half(content.to(dtype), style.to(dtype))[0]).astype(float)
    psnr = 10 * torch.log10(torch.tensor(255.0 ** 2 / ((full - low) ** 2).mean())).item()
    assert psnr >= min_psnr, f"{dtype}: {psnr:.1f} dB"


@gpu
@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="needs compute-sanitizer")
def test_compute_sanitizer_clean():
    script = ("import torch; from microast_fast import MicroAST; m = MicroAST.from_pretrained(backend='cuda', "
              "device='cuda'); c = torch.rand(2, 3, 29, 35, device='cuda'); "
              "torch.cuda.synchronize(); m(c, torch.rand(1, 3, 16, 16, device='cuda')); torch.cuda.synchronize()")
    # memcheck of every kernel launch; CUDA API errors that torch itself may provoke (and checks) are
    # not ours to judge, and a failed launch of ours raises in Python anyway.
    result = subprocess.run(["compute-sanitizer", "--tool", "memcheck", "--report-api-errors", "no",
                             "--error-exitcode", "1", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
