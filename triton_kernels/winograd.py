"""Winograd convolution F(m x m, 3 x 3): the single source of truth for the transform
matrices, the PyTorch reference of the algorithm, and the generator of the CUDA
header ``csrc/winograd_transforms.h``.

Scope (the issue "Hand-written CUDA kernels"): 3x3 filters, stride 1, dilation 1,
groups 1, any padding. Variants::

    VARIANTS = {"F2x2_3x3": 2, "F4x4_3x3": 4}      # name -> output tile m

Construction (Cook-Toom / Lavin-Gray). For F(m, r) let n = m + r - 1 (the input
tile, 4 or 6) and p_0..p_{n-2} be finite interpolation points plus the point at
infinity. With N_j = prod_{l != j} (p_j - p_l) and M(x) = prod_l (x - p_l):

    AT[i, j] = p_j^i                  AT[:, inf] = e_{m-1}
    G[j, k]  = p_j^k / N_j            G[inf, :]  = e_{r-1}
    BT[j, :] = coefficients (ascending) of M(x) / (x - p_j)     BT[inf, :] = coeffs of M(x)

so that, for a 1-D tile d (length n) and filter g (length r), the correlation
y_i = sum_k d_{i+k} g_k (i < m) is exactly y = AT [(G g) * (BT d)]. (This is the
transpose of polynomial multiplication by evaluation/interpolation at the points.)
Each row j may be rescaled (G row by a, BT row by b, AT column by 1/(a b)) without
changing the result; ``_VARIANT_POINTS`` lists the points and the signs used to land
on the matrices of Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks" (2016):

    F(2,3): points 0, 1, -1, inf; row 0 negated in G and BT, row inf negated in BT
            and AT (the classic BT = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]).
    F(4,3): points 0, 1, -1, 2, -2, inf; no rescaling: G has the usual
            1/4, -1/6, 1/24, 1/12, 1/6 entries.

2-D: Y = AT [ (G g GT) * (BT d B) ] A per tile, summed over input channels before the
output transform. The tests check the identity in exact rationals for each variant,
that the committed header equals ``cuda_header()``, and the error bounds below.

Error (relative Frobenius norm against a float64 ``F.conv2d``, random N(0,1) data,
N=2, C=64, K=32, 14x14, padding 1, computed entirely in the given dtype on CPU) —
measured and the bound the tests assert (``WINOGRAD_REL_ERROR_BOUND``, ~3x measured):

    algorithm          fp32 measured   fp32 bound   fp16 measured   fp16 bound
    direct F.conv2d    2.2e-7          -            3.6e-4          -
    F2x2_3x3           2.7e-7          8e-7         8.3e-4          2.5e-3
    F4x4_3x3           1.6e-6          5e-6         3.7e-3          1.2e-2

Larger tiles amplify rounding (entries like 5 and 1/24 in the transforms), so the
known ordering F(4x4) > F(2x2) > direct holds. (How CPU fp16 GEMMs accumulate inside
the channel sum is up to ATen; the transforms themselves run in fp16 here.)

Regenerate the header with::

    python -m fastcnn.triton_kernels.winograd --write csrc/winograd_transforms.h
"""
import argparse
import struct
from fractions import Fraction

import torch
import torch.nn.functional as F

VARIANTS = {"F2x2_3x3": 2, "F4x4_3x3": 4}

# m -> (finite points, G row scale a_j per point incl. inf (last), BT row scale b_j per
# point incl. inf); AT column j is scaled by 1 / (a_j b_j).
_VARIANT_POINTS = {
    2: ((0, 1, -1), (-1, 1, 1, 1), (-1, 1, 1, -1)),
    4: ((0, 1, -1, 2, -2), (1,) * 6, (1,) * 6),
}

# Relative Frobenius-norm error vs float64 F.conv2d, random N(0,1) x (2, 64, 14, 14) and
# w (32, 64, 3, 3), padding 1, computed in the dtype on CPU (torch 2.13), seeds 0-2:
#
#   algorithm          fp32 measured   fp32 bound   fp16 measured   fp16 bound   bf16 measured   bf16 bound
#   direct F.conv2d    2.1-2.2e-7      -            3.5-3.6e-4      -            2.9e-3          -
#   F2x2_3x3           2.6-2.7e-7      8e-7         8.2-8.3e-4      2.5e-3       6.6-6.7e-3      2e-2
#   F4x4_3x3           1.5-1.6e-6      5e-6         3.6-3.7e-3      1.2e-2       2.9-3.0e-2      9e-2
#
# The bounds (~3x measured) are what tests/test_winograd.py asserts; the CUDA/Triton
# kernels (fp32 accumulation) are expected to stay within them too.
WINOGRAD_REL_ERROR_BOUND = {
    ("F2x2_3x3", torch.float32): 8e-7,
    ("F2x2_3x3", torch.float16): 2.5e-3,
    ("F4x4_3x3", torch.float32): 5e-6,
    ("F4x4_3x3", torch.float16): 1.2e-2,
    ("F2x2_3x3", torch.bfloat16): 2e-2,
    ("F4x4_3x3", torch.bfloat16): 9e-2,
}


def error_bound(variant, dtype):
    """WINOGRAD_REL_ERROR_BOUND for (variant, dtype)."""
    return WINOGRAD_REL_ERROR_BOUND[(variant, dtype)]


def _poly_mul_linear(coeffs, root):
    """coeffs (ascending) of p(x) * (x - root)."""
    out = [Fraction(0)] * (len(coeffs) + 1)
    for i, c in enumerate(coeffs):
        out[i + 1] += c
        out[i] -= root * c
    return out


def transforms(m, r=3):
    """(AT, G, BT) of F(m, r) as lists of lists of exact ``Fraction``s:
    AT is m x n, G is n x r, BT is n x n, n = m + r - 1."""
    if r != 3 or m not in _VARIANT_POINTS:
        raise ValueError(f"winograd.transforms: unsupported F({m}, {r}); have m in {sorted(_VARIANT_POINTS)}, r = 3")
    points, g_scale, b_scale = _VARIANT_POINTS[m]
    points = [Fraction(p) for p in points]
    n = m + r - 1
    assert len(points) == n - 1
    AT = [[Fraction(0)] * n for _ in range(m)]
    G = [[Fraction(0)] * r for _ in range(n)]
    BT = [[Fraction(0)] * n for _ in range(n)]
    for j, p in enumerate(points):
        norm = Fraction(1)
        poly = [Fraction(1)]
        for l, q in enumerate(points):
            if l != j:
                norm *= p - q
                poly = _poly_mul_linear(poly, q)
        a, b = Fraction(g_scale[j]), Fraction(b_scale[j])
        for i in range(m):
            AT[i][j] = p ** i / (a * b)
        for k in range(r):
            G[j][k] = a * p ** k / norm
        for k, c in enumerate(poly):
            BT[j][k] = b * c
    full = [Fraction(1)]
    for q in points:
        full = _poly_mul_linear(full, q)
    a, b = Fraction(g_scale[-1]), Fraction(b_scale[-1])
    AT[m - 1][n - 1] = 1 / (a * b)
    G[n - 1][r - 1] = a
    BT[n - 1] = [b * c for c in full]
    return AT, G, BT


def as_tensor(matrix, dtype=torch.float64, device=None):
    """A Fraction matrix as a tensor (each entry rounded once to ``dtype``)."""
    return torch.tensor([[float(v) for v in row] for row in matrix], dtype=torch.float64,
                        device=device).to(dtype)


def _pair(v):
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) != 2:
        raise ValueError(f"winograd_conv2d_reference: padding must be an int or a pair, got {v!r}")
    return int(v[0]), int(v[1])


def winograd_conv2d_reference(x, w, padding=0, m=2):
    """conv2d(x, w, padding=padding) (stride 1, dilation 1, groups 1, no bias) by
    Winograd F(m x m, 3 x 3), computed entirely in ``x.dtype`` (the transforms are
    rounded to it), so low-precision runs show the algorithm's real rounding error.

    x: (N, C, H, W), w: (K, C, 3, 3). ``m`` is the output tile (2 or 4) or a name
    from VARIANTS."""
    if isinstance(m, str):
        if m not in VARIANTS:
            raise ValueError(f"winograd_conv2d_reference: unknown variant {m!r}; have {list(VARIANTS)}")
        m = VARIANTS[m]
    if x.dim() != 4 or w.dim() != 4 or tuple(w.shape[2:]) != (3, 3) or w.shape[1] != x.shape[1]:
        raise ValueError("winograd_conv2d_reference: expected x (N, C, H, W) and w (K, C, 3, 3), got "
                         f"{tuple(x.shape)} and {tuple(w.shape)}")
    if not x.is_floating_point() or w.dtype != x.dtype:
        raise ValueError(f"winograd_conv2d_reference: x and w must share a float dtype, got {x.dtype}, {w.dtype}")
    ph, pw = _pair(padding)
    if ph < 0 or pw < 0:
        raise ValueError(f"winograd_conv2d_reference: padding must be >= 0, got {padding!r}")
    N, C, H, W = x.shape
    K = w.shape[0]
    n = m + 2
    ho, wo = H + 2 * ph - 2, W + 2 * pw - 2
    if ho <= 0 or wo <= 0:
        raise ValueError(f"winograd_conv2d_reference: output would be empty ({ho} x {wo}) for input "
                         f"{H} x {W} and padding {(ph, pw)}")
    th, tw = -(-ho // m), -(-wo // m)
    dt, dev = x.dtype, x.device
    AT, G, BT = (as_tensor(t, dt, dev) for t in transforms(m))
    # pad so that th x tw tiles of n x n (stride m) fit exactly; extra zeros at the
    # bottom/right only feed outputs that are cropped away
    xp = F.pad(x, (pw, tw * m + 2 - W - pw, ph, th * m + 2 - H - ph))
    d = xp.unfold(2, n, m).unfold(3, n, m)                      # N, C, th, tw, n, n
    V = BT @ d @ BT.T                                           # input transform
    U = G @ w @ G.T                                             # K, C, n, n
    V = V.permute(4, 5, 1, 0, 2, 3).reshape(n * n, C, N * th * tw)
    U = U.permute(2, 3, 0, 1).reshape(n * n, K, C)
    Mt = U @ V                                                  # n*n batched GEMMs over C
    Mt = Mt.reshape(n, n, K, N, th, tw).permute(3, 2, 4, 5, 0, 1)  # N, K, th, tw, n, n
    Y = AT @ Mt @ AT.T                                          # N, K, th, tw, m, m
    Y = Y.permute(0, 1, 2, 4, 3, 5).reshape(N, K, th * m, tw * m)
    return Y[:, :, :ho, :wo].contiguous()


def _c_float(v):
    """Fraction -> C float literal: the float32 nearest to v, printed with 9 significant
    digits (enough to round-trip), plus the exact value as a comment when not exact."""
    f32 = struct.unpack("f", struct.pack("f", float(v)))[0]
    lit = f"{f32:.9g}"
    if "e" not in lit and "." not in lit:
        lit += ".0"
    lit += "f"
    return lit if Fraction(f32) == v else f"{lit} /* {v} */"


def cuda_header():
    """The C++ header declaring every variant's AT, G, BT as constexpr float arrays."""
    lines = [
        "// generated by triton_kernels/winograd.py — do not edit.",
        "// Regenerate: python -m fastcnn.triton_kernels.winograd --write csrc/winograd_transforms.h",
        "// Winograd F(m x m, 3 x 3) transforms (Cook-Toom, Lavin & Gray 2016):",
        "//   Y = AT [ (G g GT) * (BT d B) ] A  per (m+2) x (m+2) input tile d, 3 x 3 filter g.",
        "#pragma once",
        "",
        "namespace fastcnn {",
        "namespace winograd {",
    ]
    for name, m in VARIANTS.items():
        n = m + 2
        lines += ["", f"// {name}: output tile {m} x {m}, input tile {n} x {n}",
                  f"constexpr int {name}_M = {m};", f"constexpr int {name}_N = {n};"]
        for label, mat in zip(("AT", "G", "BT"), transforms(m)):
            lines.append(f"constexpr float {name}_{label}[{len(mat)}][{len(mat[0])}] = {{")
            for row in mat:
                lines.append("    {" + ", ".join(_c_float(v) for v in row) + "},")
            lines.append("};")
    lines += ["", "}  // namespace winograd", "}  // namespace fastcnn", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the Winograd transform header.")
    parser.add_argument("--write", metavar="PATH", help="write the header to PATH (default: print it)")
    args = parser.parse_args(argv)
    text = cuda_header()
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
