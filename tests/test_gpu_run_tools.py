"""The scripts of benchmarks/gpu_run.sh that turn a GPU run's test results into "auto" candidates."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("verified", ROOT / "benchmarks" / "verified.py")
verified_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(verified_module)


def junit(path, cases):
    """A JUnit file of ``(module, name, outcome)`` with outcome "pass", "fail" or "skip"."""
    body = []
    for module, name, outcome in cases:
        inner = {"pass": "", "fail": "<failure message='x'/>", "skip": "<skipped message='x'/>"}[outcome]
        body.append(f"<testcase classname='tests.{module}' name='{name}'>{inner}</testcase>")
    path.write_text(f"<testsuites><testsuite name='pytest'>{''.join(body)}</testsuite></testsuites>")
    return str(path)


def verified(*files):
    return verified_module.verified(files)


BASE = [("test_triton_kernels", "test_decoder_tail[9-13]", "pass"), ("test_triton_model", "test_alpha[0.0]", "pass")]
DESIGNS = [("test_triton_tail_banded", "test_banded_tail[1]", "pass"),
           ("test_triton_reductions", "test_split_merge[3]", "pass")]
VARIANTS = [("test_triton_variants", f"test_variant_large_fp32[1080-1920-{v}]", "pass")
            for v in ("triton+banded-tail", "triton+split-reductions", "triton+wide-tiles", "triton+all-new")]


def test_every_backend_whose_tests_all_passed(tmp_path):
    files = junit(tmp_path / "gpu.xml", BASE + DESIGNS + VARIANTS)
    cuda = junit(tmp_path / "cuda.xml", [("test_cuda_ext", "test_tail[fp16]", "pass")])
    assert verified(files, cuda) == ["triton", "triton+banded-tail", "triton+split-reductions", "triton+wide-tiles",
                                     "triton+all-new", "cuda"]


def test_a_failure_unverifies_what_it_checks(tmp_path):
    failed_variant = [(m, n, "fail" if n.endswith("-triton+banded-tail]") else o) for m, n, o in VARIANTS]
    assert verified(junit(tmp_path / "a.xml", BASE + DESIGNS + failed_variant)) == [
        "triton", "triton+split-reductions", "triton+wide-tiles", "triton+all-new"]
    failed_design = [(m, n, "fail" if m == "test_triton_reductions" else o) for m, n, o in DESIGNS]
    assert verified(junit(tmp_path / "b.xml", BASE + failed_design + VARIANTS)) == [
        "triton", "triton+banded-tail", "triton+wide-tiles"]
    failed_base = [(m, n, "fail" if m == "test_triton_model" else o) for m, n, o in BASE]
    assert verified(junit(tmp_path / "c.xml", failed_base + DESIGNS + VARIANTS)) == []


def test_a_variant_never_run_on_the_gpu_is_not_verified(tmp_path):
    skipped = [(m, n, "skip") for m, n, _ in VARIANTS]
    assert verified(junit(tmp_path / "a.xml", BASE + DESIGNS + skipped)) == ["triton"]
    # no design tests ran: only the variant whose design the base kernel tests cover
    assert verified(junit(tmp_path / "b.xml", BASE + VARIANTS)) == ["triton", "triton+wide-tiles"]
