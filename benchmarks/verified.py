"""The kernel backends a GPU run verified, from its tests' JUnit XML files.

    python benchmarks/verified.py OUTDIR/gpu-tests.xml [OUTDIR/cuda-tests.xml ...]

prints a comma list for ``auto_table.py --verified``. A backend is verified when every test of the
files that check it ran on the GPU and none failed: ``triton`` by the kernel and model tests; a
Triton variant (``triton_backend.VARIANTS``) by those, the kernel tests of each of its designs, and
every test parametrized with its name; ``cuda`` by the CUDA extension's tests.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from dataclasses import fields

from microast_fast.backends.triton_backend import VARIANTS

TRITON_FILES = ("test_triton_kernels", "test_triton_model")
DESIGN_FILES = {"banded_tail": "test_triton_tail_banded", "split_reductions": "test_triton_reductions",
                "wide_tiles": "test_triton_kernels"}
CUDA_FILES = ("test_cuda_ext",)


def outcomes(paths) -> tuple[dict, dict]:
    """(test module -> [passed?, ...], test name -> passed?) of the JUnit files; skipped tests left out."""
    by_module, by_name = defaultdict(list), {}
    for path in paths:
        for case in ElementTree.parse(path).iter("testcase"):
            if case.find("skipped") is not None:
                continue
            passed = case.find("failure") is None and case.find("error") is None
            module = case.get("classname", "").split(".")[-1]
            by_module[module].append(passed)
            by_name[f"{module}::{case.get('name', '')}"] = passed
    return by_module, by_name


def verified(paths) -> list[str]:
    by_module, by_name = outcomes(paths)

    def passed(modules) -> bool:
        return all(by_module.get(m) and all(by_module[m]) for m in modules)

    found = []
    if passed(TRITON_FILES):
        for name, design in VARIANTS.items():
            designs = [DESIGN_FILES[f.name] for f in fields(design) if getattr(design, f.name)]
            mentions = re.compile(rf"(?<=[\[-]){re.escape(name)}(?=[\]-])")  # a whole parameter id
            own = [ok for test, ok in by_name.items() if mentions.search(test)]
            if passed(designs) and all(own) and (name == "triton" or own):
                found.append(name)
    if passed(CUDA_FILES):
        found.append("cuda")
    return found


if __name__ == "__main__":
    print(",".join(verified(sys.argv[1:])))
