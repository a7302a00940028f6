"""The implicit-GEMM convolution family (triton_kernels/conv2d_igemm.py), called
through the conv2d front with family="igemm" and checked against the float64
reference. Shapes are tiny: on a machine without a GPU the kernels run under
Triton's interpreter (one 32x32x16 tile config), so channel counts of 17-40 already
give partial tiles and several channel blocks."""
import pytest
import torch

from fastcnn.triton_kernels import conv2d_igemm, reference
from fastcnn.triton_kernels.conv2d import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from helpers import BF16, DEVICE, Conv, check_forward_stats, assert_close, expanded_grad, make_input

# Named geometries (>= 16 output channels per group, this family's domain); each
# test pairs some of them with a dtype, a layout and options rather than taking the
# full Cartesian product. "flat" marks <= 16 input channels per group: the
# flattened (r, s, c) reduction.
GEOMETRIES = {
    "1x1": Conv(2, 24, 7, 9, 32, 1, 1, 1, (1, 1), (0, 0), (1, 1)),
    "1x1_s2_k40": Conv(3, 20, 9, 7, 40, 1, 1, 1, (2, 2), (0, 0), (1, 1)),
    "3x3_c40": Conv(3, 40, 11, 13, 24, 1, 3, 3, (1, 1), (1, 1), (1, 1)),
    "3x3_s2": Conv(2, 24, 13, 13, 32, 1, 3, 3, (2, 2), (1, 1), (1, 1)),
    "5x5_s2_c17": Conv(1, 17, 11, 12, 16, 1, 5, 5, (2, 2), (2, 2), (1, 1)),
    "7x7_s2_first_flat": Conv(2, 3, 13, 13, 32, 1, 7, 7, (2, 2), (3, 3), (1, 1)),
    "11x11_s4_first_flat": Conv(1, 3, 19, 19, 16, 1, 11, 11, (4, 4), (2, 2), (1, 1)),
    # unequal kernel, stride and padding along H and W
    "3x5_unequal": Conv(2, 18, 9, 12, 24, 1, 3, 5, (1, 2), (1, 2), (1, 1)),
    "dil2": Conv(2, 20, 11, 13, 16, 1, 3, 3, (1, 1), (2, 2), (2, 2)),
    # stride 2 with dilation 2: odd input rows/columns receive no tap at all
    "s2_dil2_pad10": Conv(1, 20, 12, 11, 16, 1, 3, 3, (2, 2), (1, 0), (2, 2)),
    # stride 4 with dilation 3: the taps of a stride phase need 3's inverse mod 4
    "s4_dil3": Conv(1, 16, 13, 13, 16, 1, 3, 3, (4, 4), (2, 2), (3, 3)),
    # stride 4 > kernel 3: some phases are empty, the input ends mid-stride
    "s4_small_kernel": Conv(1, 16, 13, 10, 16, 1, 3, 3, (4, 4), (1, 1), (1, 1)),
    "g2_cg20": Conv(2, 40, 9, 9, 32, 2, 3, 3, (1, 1), (1, 1), (1, 1)),
    "g4_cg4_flat": Conv(2, 16, 9, 8, 64, 4, 3, 3, (2, 1), (1, 1), (1, 1)),
    "g2_cg16_flat_dil2": Conv(1, 32, 9, 9, 32, 2, 3, 3, (1, 1), (2, 2), (2, 2)),
    "batch0": Conv(0, 16, 5, 5, 16, 1, 3, 3, (1, 1), (1, 1), (1, 1)),
}

BF16_OK = pytest.mark.skipif(not BF16, reason="bf16 is computed wrong by this Triton interpreter")






def other_layout(layout):
    return "nhwc" if layout != "nhwc" else "noncontig"


def expected_format(layout):
    """Outputs take channels_last from NHWC inputs, NCHW otherwise."""
    return torch.channels_last if layout == "nhwc" else torch.contiguous_format


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("geom, dtype, layout, bias, residual, activation", [
    ("1x1", torch.float32, "nchw", False, False, "none"),
    ("1x1_s2_k40", torch.float16, "nhwc", True, True, "relu"),
    ("3x3_c40", torch.float32, "nhwc", True, False, "relu6"),
    ("3x3_s2", torch.float32, "noncontig", True, True, "silu"),
    ("5x5_s2_c17", torch.float16, "nchw", True, False, "gelu"),
    ("7x7_s2_first_flat", torch.float32, "nchw", True, False, "relu"),
    ("11x11_s4_first_flat", torch.float16, "nhwc", False, True, "none"),
    ("3x5_unequal", torch.float32, "noncontig", True, True, "gelu"),
    ("dil2", torch.float64, "nhwc", True, True, "silu"),
    ("s2_dil2_pad10", torch.float32, "nchw", False, False, "relu6"),
    ("s4_dil3", torch.float32, "nhwc", True, False, "none"),
    ("s4_small_kernel", torch.float16, "noncontig", True, True, "relu"),
    ("g2_cg20", torch.float32, "nhwc", True, True, "none"),
    ("g4_cg4_flat", torch.float64, "noncontig", True, False, "gelu"),
    ("g2_cg16_flat_dil2", torch.float16, "nhwc", False, True, "silu"),
    ("batch0", torch.float32, "nchw", True, False, "none"),
    pytest.param("3x3_s2", torch.bfloat16, "nhwc", True, True, "relu", marks=BF16_OK),
    pytest.param("g4_cg4_flat", torch.bfloat16, "nchw", True, False, "none", marks=BF16_OK),
])
def test_forward(geom, dtype, layout, bias, residual, activation):
    g = GEOMETRIES[geom]
    x = make_input(g.input_shape, dtype, layout)
    w = make_input(g.weight_shape, dtype, "noncontig")
    b = make_input((g.k,), dtype) if bias else None
    # The residual in another layout than x: the kernel takes any strides.
    res = make_input(g.out_shape, dtype, other_layout(layout)) if residual else None
    y = conv2d_forward(x, w, b, res, *g.args, activation=activation, family="igemm")
    ref = reference.conv2d_forward(x.double(), w.double(), None if b is None else b.double(),
                                   None if res is None else res.double(), *g.args, activation)
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=expected_format(layout))
    assert_close(y, ref, dtype, what=f"forward {geom}")


@pytest.mark.parametrize("geom, dtype, layout, offset", [
    ("3x3_c40", torch.float32, "nhwc", 0.0),
    ("7x7_s2_first_flat", torch.float16, "nchw", 0.0),
    ("g2_cg20", torch.float64, "noncontig", 0.0),
    # A mean 1000x the spread: sum(y^2) - sum(y)^2 / n would cancel catastrophically.
    ("1x1_s2_k40", torch.float32, "nhwc", 1000.0),
])
def test_forward_stats(geom, dtype, layout, offset):
    check_forward_stats(GEOMETRIES[geom], dtype, layout, offset, "igemm")


def test_forward_stats_partials():
    """The family's raw per-tile partials: counts cover every pixel once, and each
    tile's sum and M2 are those of its own rows of y."""
    g = GEOMETRIES["3x3_s2"]
    x = make_input(g.input_shape).contiguous(memory_format=torch.channels_last)
    w = make_input(g.weight_shape).contiguous(memory_format=torch.channels_last)
    y = torch.empty(g.out_shape, device=DEVICE)
    psum, pm2, count = conv2d_igemm.forward(x, w, None, None, y, *g.args, 0, True)
    rows = y.permute(0, 2, 3, 1).reshape(-1, g.k).double()  # GEMM rows: pixels in (n, p, q) order
    assert count.sum().item() == rows.shape[0] and psum.shape == pm2.shape == (count.numel(), g.k)
    start = 0
    for t, c in enumerate(count.long().tolist()):
        tile = rows[start:start + c]
        assert_close(psum[t], tile.sum(0), torch.float32, what=f"psum tile {t}")
        assert_close(pm2[t], ((tile - tile.mean(0)) ** 2).sum(0), torch.float32, what=f"pm2 tile {t}")
        start += c


def test_forward_stats_empty():
    g = GEOMETRIES["batch0"]
    y, (mean, var) = conv2d_forward(make_input(g.input_shape), make_input(g.weight_shape), None, None,
                                    *g.args, stats=True, family="igemm")
    assert y.shape == g.out_shape and mean.isnan().all() and var.isnan().all()


# ----------------------------------------------------------------------------- input gradient

@pytest.mark.parametrize("geom, dtype, layout", [
    ("1x1", torch.float32, "nhwc"),
    ("1x1_s2_k40", torch.float32, "nchw"),
    ("3x3_c40", torch.float16, "noncontig"),
    ("3x3_s2", torch.float32, "nhwc"),
    ("5x5_s2_c17", torch.float32, "nchw"),
    ("7x7_s2_first_flat", torch.float32, "nhwc"),
    ("11x11_s4_first_flat", torch.float32, "noncontig"),
    ("3x5_unequal", torch.float16, "nhwc"),
    ("dil2", torch.float32, "nchw"),
    ("s2_dil2_pad10", torch.float64, "nhwc"),
    ("s4_dil3", torch.float32, "noncontig"),
    ("s4_small_kernel", torch.float32, "nchw"),
    ("g2_cg20", torch.float16, "nhwc"),
    ("g4_cg4_flat", torch.float32, "nchw"),
    ("g2_cg16_flat_dil2", torch.float64, "noncontig"),
    ("batch0", torch.float32, "nchw"),
    ("3x3_s2", torch.float32, "expanded"),
    ("g4_cg4_flat", torch.float16, "expanded"),
    pytest.param("s4_dil3", torch.bfloat16, "nhwc", marks=BF16_OK),
])
def test_input_grad(geom, dtype, layout):
    g = GEOMETRIES[geom]
    if layout == "expanded":
        dy = expanded_grad(g.out_shape, dtype)
    else:
        dy = make_input(g.out_shape, dtype, layout)
    w = make_input(g.weight_shape, dtype, "noncontig")
    dx = conv2d_input_grad(dy, w, g.input_shape, *g.args, family="igemm")
    ref = reference.conv2d_input_grad(dy.double(), w.double(), g.input_shape, *g.args)
    assert dx.dtype == dtype
    assert dx.is_contiguous(memory_format=expected_format(layout))
    assert_close(dx, ref, dtype, what=f"input_grad {geom}")


def test_tap_progression():
    """_phase_taps' closed form (first tap t with t*dil = base mod stride, then every
    period-th) against a brute-force search."""
    for stride in range(1, 9):
        for dil in range(1, 7):
            period, g, inv = conv2d_igemm._tap_progression(stride, dil)
            for base in range(3 * stride):
                taps = [t for t in range(40) if (base - t * dil) % stride == 0]
                if base % g:
                    assert not taps
                else:
                    first = (base // g) * inv % period
                    assert taps == list(range(first, 40, period)), (stride, dil, base)


# ----------------------------------------------------------------------------- weight gradient

@pytest.mark.parametrize("geom, dtype, layout, split_align", [
    ("1x1", torch.float32, "nchw", None),
    ("1x1_s2_k40", torch.float16, "nhwc", 27),
    ("3x3_c40", torch.float32, "noncontig", 43),
    ("3x3_s2", torch.float32, "nhwc", None),
    ("5x5_s2_c17", torch.float16, "nchw", None),
    ("7x7_s2_first_flat", torch.float32, "nhwc", 27),
    ("11x11_s4_first_flat", torch.float64, "nchw", None),
    ("3x5_unequal", torch.float32, "nhwc", 43),
    ("dil2", torch.float16, "noncontig", 43),
    ("s2_dil2_pad10", torch.float32, "nchw", None),
    ("s4_dil3", torch.float32, "nhwc", None),
    ("s4_small_kernel", torch.float32, "noncontig", None),
    ("g2_cg20", torch.float32, "nchw", 43),
    ("g4_cg4_flat", torch.float16, "nhwc", 27),
    ("g2_cg16_flat_dil2", torch.float64, "nhwc", 27),
    ("3x3_s2", torch.float32, "expanded", 27),
    ("g4_cg4_flat", torch.float16, "expanded", None),
    pytest.param("g2_cg20", torch.bfloat16, "nhwc", None, marks=BF16_OK),
])
def test_weight_grad(geom, dtype, layout, split_align, monkeypatch):
    g = GEOMETRIES[geom]
    splits = []
    if split_align is not None:
        # Several splits, whose ends fall inside a 16-pixel interpreter BLOCK_K.
        monkeypatch.setattr(conv2d_igemm, "MIN_SPLIT_PIXELS", split_align)
        monkeypatch.setattr(conv2d_igemm, "SPLIT_ALIGN", split_align)
        choose = conv2d_igemm._weight_grad_split
        monkeypatch.setattr(conv2d_igemm, "_weight_grad_split", lambda *a: splits.append(choose(*a)) or splits[-1])
    if layout == "expanded":
        dy = expanded_grad(g.out_shape, dtype)
        x = make_input(g.input_shape, dtype, "nhwc")
    else:
        dy = make_input(g.out_shape, dtype, layout)
        x = make_input(g.input_shape, dtype, other_layout(layout))
    dw = conv2d_weight_grad(dy, x, g.weight_shape, *g.args, family="igemm")
    ref = reference.conv2d_weight_grad(dy.double(), x.double(), g.weight_shape, *g.args)
    assert dw.dtype == dtype and dw.is_contiguous()
    assert_close(dw, ref, dtype, what=f"weight_grad {geom}")
    assert split_align is None or splits[0][0] > 1 and splits[0][1] % 16, "meant to test split ends"


def test_weight_grad_batch0():
    g = GEOMETRIES["batch0"]
    dw = conv2d_weight_grad(make_input(g.out_shape), make_input(g.input_shape), g.weight_shape,
                            *g.args, family="igemm")
    assert dw.shape == g.weight_shape and not dw.any()


def test_weight_grad_deterministic(monkeypatch):
    """Split partials are summed by torch in a fixed order, no atomics: bitwise
    reproducible."""
    monkeypatch.setattr(conv2d_igemm, "MIN_SPLIT_PIXELS", 27)
    monkeypatch.setattr(conv2d_igemm, "SPLIT_ALIGN", 27)
    g = GEOMETRIES["g4_cg4_flat"]
    dy, x = make_input(g.out_shape), make_input(g.input_shape)
    first = conv2d_weight_grad(dy, x, g.weight_shape, *g.args, family="igemm")
    assert torch.equal(first, conv2d_weight_grad(dy, x, g.weight_shape, *g.args, family="igemm"))


@pytest.mark.parametrize("pixels, out_tiles", [(1, 9), (255, 1), (257, 1), (600, 1), (802_816, 9),
                                               (12_544, 576), (10**7, 2)])
def test_weight_grad_split(pixels, out_tiles):
    """Splits cover every pixel exactly once, in aligned chunks of at least
    MIN_SPLIT_PIXELS, and fill the GPU about SPLIT_WAVES times without overfilling."""
    split, chunk = conv2d_igemm._weight_grad_split(pixels, out_tiles, torch.device("cpu"))
    assert chunk % conv2d_igemm.SPLIT_ALIGN == 0
    assert (split - 1) * chunk < pixels <= split * chunk
    programs = conv2d_igemm.SPLIT_WAVES * conv2d_igemm.NOMINAL_SMS
    if split > 1:
        assert chunk >= conv2d_igemm.MIN_SPLIT_PIXELS and split <= -(-programs // out_tiles)
    else:
        assert pixels < 2 * conv2d_igemm.MIN_SPLIT_PIXELS or out_tiles >= programs
