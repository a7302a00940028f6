"""Winograd F(2x2,3x3) and F(4x4,3x3): the transform matrices (exact Cook-Toom
identity in rationals, the Lavin-Gray values), the generated CUDA header against its
generator, the PyTorch reference of the algorithm against F.conv2d in float64, and
the documented error bound per variant and dtype."""
import random
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastcnn.triton_kernels import winograd
from fastcnn.triton_kernels.winograd import (VARIANTS, WINOGRAD_REL_ERROR_BOUND, as_tensor, cuda_header,
                                             transforms, winograd_conv2d_reference)
from helpers import rel_error

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "csrc" / "winograd_transforms.h"


def _matvec(A, v):
    return [sum((a * b for a, b in zip(row, v)), Fraction(0)) for row in A]


@pytest.mark.parametrize("name", VARIANTS)
def test_identity_exact(name):
    m = VARIANTS[name]
    AT, G, BT = transforms(m)
    n = m + 2
    assert (len(AT), len(AT[0]), len(G), len(G[0]), len(BT), len(BT[0])) == (m, n, n, 3, n, n)
    rng = random.Random(m)
    for _ in range(200):
        d = [Fraction(rng.randint(-9, 9)) for _ in range(n)]
        g = [Fraction(rng.randint(-9, 9)) for _ in range(3)]
        y = _matvec(AT, [u * v for u, v in zip(_matvec(G, g), _matvec(BT, d))])
        assert y == [sum(d[i + k] * g[k] for k in range(3)) for i in range(m)]
    # and for the basis vectors, so every entry of the bilinear form is exercised
    for i in range(n):
        for k in range(3):
            d = [Fraction(int(j == i)) for j in range(n)]
            g = [Fraction(int(j == k)) for j in range(3)]
            y = _matvec(AT, [u * v for u, v in zip(_matvec(G, g), _matvec(BT, d))])
            assert y == [Fraction(int(i - o == k)) for o in range(m)]


def test_lavin_gray_matrices():
    AT, G, BT = transforms(2)
    assert BT == [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    assert G == [[1, 0, 0], [Fraction(1, 2)] * 3, [Fraction(1, 2), Fraction(-1, 2), Fraction(1, 2)], [0, 0, 1]]
    assert AT == [[1, 1, 1, 0], [0, 1, -1, -1]]
    AT, G, BT = transforms(4)
    f = Fraction
    assert G == [[f(1, 4), 0, 0], [f(-1, 6)] * 3, [f(-1, 6), f(1, 6), f(-1, 6)],
                 [f(1, 24), f(1, 12), f(1, 6)], [f(1, 24), f(-1, 12), f(1, 6)], [0, 0, 1]]
    assert BT[0] == [4, 0, -5, 0, 1, 0] and BT[5] == [0, 4, 0, -5, 0, 1]
    assert AT[3] == [0, 1, -1, 8, -8, 1]
    with pytest.raises(ValueError, match="unsupported"):
        transforms(3)


def test_header_matches_generator(tmp_path):
    assert HEADER.read_text(encoding="utf-8") == cuda_header(), (
        "csrc/winograd_transforms.h is stale: run "
        "python -m fastcnn.triton_kernels.winograd --write csrc/winograd_transforms.h")
    out = tmp_path / "h.h"
    winograd.main(["--write", str(out)])
    assert out.read_text(encoding="utf-8") == cuda_header()


def test_header_values_round_trip():
    """Every literal in the header is the float32 nearest to the exact matrix entry."""
    text = cuda_header()
    for name, m in VARIANTS.items():
        for label, mat in zip(("AT", "G", "BT"), transforms(m)):
            assert f"constexpr float {name}_{label}[{len(mat)}][{len(mat[0])}]" in text
            body = text.split(f"{name}_{label}[")[1].split("};")[0].split("= {", 1)[1]
            body = re.sub(r"/\*.*?\*/", "", body)
            vals = [float(t.strip().rstrip("f")) for t in re.findall(r"[-0-9.e+]+f", body)]
            want = as_tensor(mat, torch.float32).flatten().tolist()
            assert torch.tensor(vals, dtype=torch.float32).tolist() == want


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_header_compiles():
    src = ('#include "csrc/winograd_transforms.h"\n'
           'static_assert(fastcnn::winograd::F4x4_3x3_N == 6, "");\n'
           'static_assert(fastcnn::winograd::F4x4_3x3_BT[0][2] == -5.0f, "");\n'
           'int main() { return 0; }\n')
    subprocess.run(["g++", "-std=c++17", "-x", "c++", f"-I{ROOT}", "-fsyntax-only", "-"],
                   input=src, text=True, check=True)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("h,w", [(1, 1), (5, 7), (7, 13), (10, 10), (13, 5), (1, 10)])
@pytest.mark.parametrize("padding", [0, 1, 2, (2, 0)])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_reference_matches_conv2d_float64(name, h, w, padding, n):
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        with pytest.raises(ValueError, match="empty"):
            winograd_conv2d_reference(torch.zeros(n, 3, h, w, dtype=torch.float64),
                                      torch.zeros(5, 3, 3, 3, dtype=torch.float64), padding, name)
        return
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, 3, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
    out = winograd_conv2d_reference(x, wt, padding, VARIANTS[name])
    ref = F.conv2d(x, wt, padding=padding)
    assert out.shape == ref.shape and out.dtype == torch.float64
    if ref.numel():
        assert rel_error(out, ref) < 1e-12
        assert (out - ref).abs().max().item() < 1e-12 * max(1.0, ref.abs().max().item())


def test_reference_args():
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(ValueError, match="unknown variant"):
        winograd_conv2d_reference(x, torch.randn(3, 2, 3, 3), 1, "F6x6_3x3")
    with pytest.raises(ValueError, match="3, 3"):
        winograd_conv2d_reference(x, torch.randn(3, 2, 5, 5), 1, 2)
    with pytest.raises(ValueError, match="dtype"):
        winograd_conv2d_reference(x, torch.randn(3, 2, 3, 3, dtype=torch.float64), 1, 2)


@pytest.fixture(scope="module")
def error_case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 14, 14, generator=g, dtype=torch.float64)
    w = torch.randn(32, 64, 3, 3, generator=g, dtype=torch.float64)
    return x, w, F.conv2d(x, w, padding=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_error_bounds(error_case, dtype):
    x, w, ref = error_case
    xs, ws = x.to(dtype), w.to(dtype)
    direct = rel_error(F.conv2d(xs, ws, padding=1), ref)
    errs = {}
    for name in VARIANTS:
        out = winograd_conv2d_reference(xs, ws, 1, name)
        assert out.dtype == dtype and torch.isfinite(out).all()
        errs[name] = rel_error(out, ref)
        bound = WINOGRAD_REL_ERROR_BOUND[(name, dtype)]
        assert errs[name] <= bound, f"{name} {dtype}: relative error {errs[name]:.3e} > bound {bound:.1e}"
        # the bound is meaningful: not more than ~10x what we measure
        assert errs[name] > bound / 10
    assert errs["F4x4_3x3"] > errs["F2x2_3x3"] > direct, (errs, direct)
