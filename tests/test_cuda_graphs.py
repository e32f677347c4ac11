"""``MicroAST(cuda_graphs=True)``: repeated forwards replayed from CUDA graphs (``cuda_graphs``).

Off a GPU, the keying and copying logic runs with the capture replaced by plain re-execution of the
same forward on the graph's own tensors (what a replay computes), on the torch backend: a new shape
is captured anew, a new style or alpha (or signals modified in place) takes effect, the output is a
new tensor each call. The GPU tests replay real graphs of every kernel backend.
"""

import pytest
import torch

from microast_fast import MicroAST, cuda_graphs

CUDA = torch.cuda.is_available()


class EagerRecorder(cuda_graphs.GraphedForward):
    """Capture as re-execution: replay recomputes ``forward`` from the static inputs into ``out``."""

    def __init__(self):
        super().__init__()
        self.captures = 0

    def record(self, forward, device):
        self.captures += 1
        out = forward()
        return (lambda: out.copy_(forward())), out


def images(seed, n, h, w):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


@pytest.fixture(scope="module")
def plain():
    return MicroAST.from_pretrained(backend="torch", tile_size=0)


def test_replays_follow_shape_style_and_alpha(plain):
    model = MicroAST.from_pretrained(backend="torch", tile_size=0)
    recorder = EagerRecorder()
    backend = model._backend_for(False)
    style_a, style_b = images(1, 1, 40, 40), images(2, 1, 40, 40)
    content = images(3, 2, 24, 36)
    with torch.inference_mode():
        signals_a, signals_b = model.encode_style(style_a), model.encode_style(style_b)
        first = recorder(model, backend, content, signals_a, 1.0)
        again = recorder(model, backend, content, signals_a, 1.0)
        assert recorder.captures == 1
        assert again is not first and torch.equal(first, again)  # a new tensor each call
        torch.testing.assert_close(first, plain(content, signals_a, 1.0), rtol=0, atol=1e-6)

        other_style = recorder(model, backend, content, signals_b, 0.5)
        assert recorder.captures == 1
        torch.testing.assert_close(other_style, plain(content, signals_b, 0.5), rtol=0, atol=1e-6)

        per_sample = torch.tensor([0.25, 1.0])
        out = recorder(model, backend, content, signals_b, per_sample.reshape(2, 1, 1, 1))
        assert recorder.captures == 2  # another alpha form: its own graph
        torch.testing.assert_close(out, plain(content, signals_b, per_sample), rtol=0, atol=1e-6)

        signals_b.dec1_mean.add_(0.1)  # modified in place: copied again
        out = recorder(model, backend, content, signals_b, 0.5)
        torch.testing.assert_close(out, plain(content, signals_b, 0.5), rtol=0, atol=1e-6)

        smaller = images(4, 1, 20, 28)
        out = recorder(model, backend, smaller, signals_a, 1.0)
        assert recorder.captures == 3  # a new shape is captured anew
        torch.testing.assert_close(out, plain(smaller, signals_a, 1.0), rtol=0, atol=1e-6)


@pytest.mark.interpreter
@pytest.mark.parametrize("backend", ["triton", "triton+all-new"])
def test_replays_of_the_kernel_backends(backend):
    """The kernel backends take the graph's alpha tensor and signals as their eager forward takes a float
    alpha and the caller's signals (Triton's interpreter on a CPU)."""
    pytest.importorskip("triton")
    if CUDA:
        pytest.skip("the GPU test replays real graphs")
    model = MicroAST.from_pretrained(backend=backend, tile_size=0)
    recorder = EagerRecorder()
    backend_obj = model._backend_for(False)
    content, style = images(8, 2, 20, 28), images(9, 1, 24, 24)
    with torch.inference_mode():
        signals = model.encode_style(style)
        for alpha in (1.0, 0.3):
            out = recorder(model, backend_obj, content, signals, alpha)
            assert torch.equal(out, model(content, signals, alpha))
    assert recorder.captures == 1


def test_new_weights_are_captured_anew():
    model = MicroAST.from_pretrained(backend="torch", tile_size=0)
    recorder = EagerRecorder()
    backend = model._backend_for(False)
    content, style = images(5, 1, 20, 20), images(6, 1, 32, 32)
    with torch.inference_mode():
        signals = model.encode_style(style)
        recorder(model, backend, content, signals, 1.0)
    model.decoder.dec3[10].conv_layer.weight = torch.nn.Parameter(model.decoder.dec3[10].conv_layer.weight * 2,
                                                                   requires_grad=False)
    with torch.inference_mode():
        out = recorder(model, backend, content, signals, 1.0)
        assert recorder.captures == 2
        torch.testing.assert_close(out, model._backend_for(False).stylize(model, content, signals, 1.0),
                                   rtol=0, atol=1e-6)


def test_graphs_need_a_cuda_device_and_whole_image_inference():
    with pytest.raises(ValueError, match="does not combine with max_memory"):
        MicroAST(backend="torch", max_memory="1GB", cuda_graphs=True)
    model = MicroAST.from_pretrained(backend="torch", cuda_graphs=True)
    content = images(7, 1, 16, 16)
    with pytest.raises(ValueError, match="model is on cpu"):
        model(content, content)


def test_a_model_with_graphs_pickles_without_them():
    import copy

    model = MicroAST.from_pretrained(backend="torch", cuda_graphs=True)
    model._graphed._graphs["stale"] = object()
    assert copy.deepcopy(model)._graphed._graphs == {}


GPU_BACKENDS = ["torch", "triton", "triton+banded-tail", "triton+split-reductions",
                "triton+wide-tiles", "triton+all-new", "cuda"]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_replayed_forward_equals_the_eager_one(backend, dtype):
    from microast_fast.dispatch import unavailable_reason

    reason = unavailable_reason(backend, torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    eager = MicroAST.from_pretrained(backend=backend, device="cuda", dtype=dtype)
    graphed = MicroAST.from_pretrained(backend=backend, device="cuda", dtype=dtype, cuda_graphs=True)
    style_a, style_b = images(1, 1, 256, 256).cuda().to(dtype), images(2, 1, 200, 300).cuda().to(dtype)
    with torch.inference_mode():
        signals_a, signals_b = eager.encode_style(style_a), eager.encode_style(style_b)
        for content, signals, alpha in [(images(3, 1, 270, 480), signals_a, 1.0),
                                        (images(4, 1, 270, 480), signals_b, 0.3),  # new frame, style, alpha
                                        (images(5, 2, 128, 160), signals_a, 0.7)]:  # a new shape
            content = content.cuda().to(dtype)
            out = graphed(content, signals, alpha)
            expected = eager(content, signals, alpha)
            if backend == "torch":  # cuDNN may pick another algorithm inside a capture
                torch.testing.assert_close(out, expected)
            else:  # the same kernels and configs on the same inputs: equal, bit for bit
                assert torch.equal(out, expected), (out.float() - expected.float()).abs().max().item()
