"""The direct grouped-convolution family (triton_kernels/conv2d_grouped.py), called
through the conv2d front with family="grouped" and checked against the float64
reference. Shapes are tiny: on a machine without a GPU the kernels run under
Triton's interpreter. bf16 is tested there too: this family has no tl.dot."""
import pytest
import torch

from fastcnn.triton_kernels import conv2d_grouped, reference
from fastcnn.triton_kernels.conv2d import conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from helpers import DEVICE, Conv, check_forward_stats, assert_close, expanded_grad, make_input

# Named geometries; each test below pairs some of them with a dtype, a layout and
# options instead of taking the full Cartesian product.
GEOMETRIES = {
    # depthwise, channel multiplier 1 and 2
    "dw3": Conv(2, 8, 7, 7, 8, 8, 3, 3, (1, 1), (1, 1), (1, 1)),
    "dw5_mult2_s2": Conv(1, 6, 9, 11, 12, 6, 5, 5, (2, 2), (2, 2), (1, 1)),
    "dw7": Conv(1, 4, 8, 7, 4, 4, 7, 7, (1, 1), (3, 3), (1, 1)),
    "dw3_s4": Conv(1, 8, 13, 10, 8, 8, 3, 3, (4, 4), (1, 1), (1, 1)),
    "dw3_dil2": Conv(1, 8, 9, 9, 16, 8, 3, 3, (1, 1), (2, 2), (2, 2)),
    # more channels than one tile (16 under the interpreter), with a tail
    "dw3_c40": Conv(2, 40, 6, 5, 40, 40, 3, 3, (1, 1), (1, 1), (1, 1)),
    # ResNeXt-like: 4-8 groups of 4-8 channels
    "g4_cg4": Conv(3, 16, 5, 6, 16, 4, 3, 3, (1, 1), (1, 1), (1, 1)),
    "g8_cg8_kg4_s2": Conv(1, 64, 6, 5, 32, 8, 3, 3, (2, 2), (1, 1), (1, 1)),
    # groups=2 with few channels; odd channel counts per group
    "g2_1x1": Conv(3, 4, 5, 7, 6, 2, 1, 1, (1, 1), (0, 0), (1, 1)),
    "g3_cg5_kg3": Conv(1, 15, 7, 5, 9, 3, 3, 1, (1, 1), (1, 0), (1, 1)),
    # unequal kernel / stride / padding / dilation along H and W
    "g3_unequal": Conv(2, 6, 9, 8, 6, 3, 3, 5, (1, 2), (2, 0), (1, 1)),
    "g2_unequal_dil": Conv(1, 4, 10, 9, 8, 2, 5, 3, (2, 1), (2, 0), (1, 2)),
    "dw3_s2_dil2": Conv(2, 6, 11, 9, 12, 6, 3, 3, (2, 2), (2, 2), (2, 2)),
    # input smaller than the stride: some stride phases of dx are empty
    "g2_s4_small": Conv(1, 4, 3, 13, 4, 2, 1, 1, (4, 4), (0, 0), (1, 1)),
    "batch0": Conv(0, 8, 5, 5, 8, 8, 3, 3, (1, 1), (1, 1), (1, 1)),
}




def make_weight(g, dtype, layout="nchw"):
    return make_input(g.weight_shape, dtype, layout)


# ----------------------------------------------------------------------------- forward

@pytest.mark.parametrize("geom, dtype, layout, bias, residual, activation", [
    ("dw3", torch.float32, "nchw", True, False, "relu"),
    ("dw5_mult2_s2", torch.float16, "nhwc", True, True, "relu6"),
    ("dw7", torch.float32, "noncontig", False, False, "silu"),
    ("dw3_s4", torch.float32, "nchw", True, False, "none"),
    ("dw3_dil2", torch.float32, "nhwc", True, False, "gelu"),
    ("dw3_c40", torch.float32, "nhwc", True, True, "none"),
    ("g4_cg4", torch.float32, "noncontig", True, True, "gelu"),
    ("g8_cg8_kg4_s2", torch.float16, "nhwc", True, False, "none"),
    ("g2_1x1", torch.float32, "nhwc", False, True, "relu"),
    ("g3_cg5_kg3", torch.float32, "nchw", True, False, "relu6"),
    ("g3_unequal", torch.float16, "noncontig", False, True, "silu"),
    ("g2_unequal_dil", torch.float64, "nchw", True, True, "silu"),
    ("dw3_s2_dil2", torch.bfloat16, "nhwc", True, True, "relu"),
    ("batch0", torch.float32, "nchw", True, False, "none"),
])
def test_forward(geom, dtype, layout, bias, residual, activation):
    g = GEOMETRIES[geom]
    x = make_input((g.n, g.c, g.h, g.w), dtype, layout)
    w = make_weight(g, dtype)
    b = make_input((g.k,), dtype) if bias else None
    # The residual in another layout than x: the front and kernel take any strides.
    res = make_input(g.out_shape, dtype, "nhwc" if layout != "nhwc" else "noncontig") if residual else None
    y = conv2d_forward(x, w, b, res, *g.args, activation=activation, family="grouped")
    ref = reference.conv2d_forward(x.double(), w.double(), None if b is None else b.double(),
                                   None if res is None else res.double(), *g.args, activation)
    assert y.dtype == dtype
    # Output layout follows the input's: channels_last for NHWC x, NCHW otherwise.
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
    assert_close(y, ref, dtype, what=f"forward {geom}")


@pytest.mark.parametrize("geom, dtype, layout, offset", [
    ("dw3", torch.float32, "nhwc", 0.0),
    ("g4_cg4", torch.float16, "nchw", 0.0),
    ("dw3_s2_dil2", torch.float64, "noncontig", 0.0),
    # A mean 1000x the spread: sum(y^2) - sum(y)^2 / n would cancel catastrophically.
    ("dw3_c40", torch.float32, "nhwc", 1000.0),
])
def test_forward_stats(geom, dtype, layout, offset):
    check_forward_stats(GEOMETRIES[geom], dtype, layout, offset, "grouped")


def test_forward_stats_empty():
    g = GEOMETRIES["batch0"]
    x = make_input((g.n, g.c, g.h, g.w))
    y, (mean, var) = conv2d_forward(x, make_weight(g, torch.float32), None, None, *g.args,
                                    stats=True, family="grouped")
    assert y.shape == g.out_shape and mean.isnan().all() and var.isnan().all()


# ----------------------------------------------------------------------------- input gradient

@pytest.mark.parametrize("geom, dtype, layout", [
    ("dw3", torch.float32, "nchw"),
    ("dw5_mult2_s2", torch.float16, "nhwc"),
    ("dw7", torch.float32, "nhwc"),
    ("dw3_s4", torch.float32, "noncontig"),
    ("dw3_c40", torch.float16, "nchw"),
    ("g4_cg4", torch.float32, "noncontig"),
    ("g8_cg8_kg4_s2", torch.float16, "nhwc"),
    ("g2_1x1", torch.float32, "nchw"),
    ("g3_cg5_kg3", torch.float32, "nhwc"),
    ("g3_unequal", torch.float32, "nchw"),
    ("g2_unequal_dil", torch.float32, "nhwc"),
    ("dw3_s2_dil2", torch.float64, "noncontig"),
    ("g2_s4_small", torch.float32, "nhwc"),
    ("dw3_dil2", torch.bfloat16, "nhwc"),
    ("batch0", torch.float32, "nchw"),
    ("dw3_s2_dil2", torch.float32, "expanded"),
    ("g3_unequal", torch.float16, "expanded"),
])
def test_input_grad(geom, dtype, layout):
    g = GEOMETRIES[geom]
    if layout == "expanded":
        dy = expanded_grad(g.out_shape, dtype)
    else:
        dy = make_input(g.out_shape, dtype, layout)
    w = make_weight(g, dtype, "noncontig")
    dx = conv2d_input_grad(dy, w, (g.n, g.c, g.h, g.w), *g.args, family="grouped")
    ref = reference.conv2d_input_grad(dy.double(), w.double(), (g.n, g.c, g.h, g.w), *g.args)
    assert dx.dtype == dtype
    assert dx.is_contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
    assert_close(dx, ref, dtype, what=f"input_grad {geom}")


@pytest.mark.parametrize("geom", ["dw3_s4", "g2_s4_small", "dw3_s2_dil2"])
def test_input_grad_writes_every_pixel(geom):
    """dx pixels that no tap reaches (stride gaps, empty stride phases) are written
    as zeros, not left as they were: the family is called directly on a NaN-filled
    dx, in NCHW and channels_last."""
    g = GEOMETRIES[geom]
    dy = make_input(g.out_shape, layout="nhwc")
    w = make_weight(g, torch.float32, "nhwc")
    ref = reference.conv2d_input_grad(dy.double(), w.double(), (g.n, g.c, g.h, g.w), *g.args)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        dx = torch.full((g.n, g.c, g.h, g.w), float("nan"), device=DEVICE).contiguous(memory_format=memory_format)
        conv2d_grouped.input_grad(dy, w, dx, *g.args)
        assert_close(dx, ref, what=f"input_grad {geom} {memory_format}")


# ----------------------------------------------------------------------------- weight gradient

@pytest.mark.parametrize("geom, dtype, layout, split_pixels", [
    ("dw3", torch.float32, "nchw", None),
    ("dw5_mult2_s2", torch.float16, "nhwc", 40),
    ("dw7", torch.float32, "noncontig", 40),
    ("dw3_s4", torch.float32, "nhwc", None),
    ("dw3_dil2", torch.float32, "nchw", 40),
    ("dw3_c40", torch.float16, "nhwc", 8),
    ("g4_cg4", torch.float32, "noncontig", 40),
    ("g8_cg8_kg4_s2", torch.float16, "nhwc", None),
    ("g2_1x1", torch.float32, "nchw", 40),
    ("g3_cg5_kg3", torch.float32, "nhwc", 40),
    ("g3_unequal", torch.float64, "noncontig", 40),
    ("g2_unequal_dil", torch.float32, "nhwc", None),
    ("g2_s4_small", torch.float32, "nchw", None),
    ("dw3_s2_dil2", torch.bfloat16, "nhwc", 40),
    ("dw3_s2_dil2", torch.float32, "expanded", 40),
    ("g4_cg4", torch.float16, "expanded", None),
])
def test_weight_grad(geom, dtype, layout, split_pixels, monkeypatch):
    g = GEOMETRIES[geom]
    if split_pixels is not None:
        # Many splits, whose ends fall inside a 32-pixel interpreter tile.
        monkeypatch.setattr(conv2d_grouped, "SPLIT_PIXELS", split_pixels)
    if layout == "expanded":
        dy = expanded_grad(g.out_shape, dtype)
        x = make_input((g.n, g.c, g.h, g.w), dtype, "nhwc")
    else:
        dy = make_input(g.out_shape, dtype, layout)
        x = make_input((g.n, g.c, g.h, g.w), dtype, "nhwc" if layout != "nhwc" else "noncontig")
    weight_shape = (g.k, g.c // g.groups, g.r, g.s)
    dw = conv2d_weight_grad(dy, x, weight_shape, *g.args, family="grouped")
    ref = reference.conv2d_weight_grad(dy.double(), x.double(), weight_shape, *g.args)
    assert dw.dtype == dtype and dw.is_contiguous()
    assert_close(dw, ref, dtype, what=f"weight_grad {geom}")


def test_weight_grad_deterministic(monkeypatch):
    """Split partial sums are added by torch in a fixed order: no atomics, so the
    result is bitwise reproducible."""
    monkeypatch.setattr(conv2d_grouped, "SPLIT_PIXELS", 40)
    g = GEOMETRIES["g4_cg4"]
    dy = make_input(g.out_shape)
    x = make_input((g.n, g.c, g.h, g.w))
    weight_shape = (g.k, g.c // g.groups, g.r, g.s)
    first = conv2d_weight_grad(dy, x, weight_shape, *g.args, family="grouped")
    assert torch.equal(first, conv2d_weight_grad(dy, x, weight_shape, *g.args, family="grouped"))


def test_split_chunk_covers_pixels():
    """The weight gradient's splits cover every pixel once, in multiples of SPLIT_PIXELS."""
    for m, programs in [(1, 9), (511, 1), (513, 1), (100_352, 72), (10**7, 2000)]:
        chunk = conv2d_grouped._split_chunk(m, programs)
        splits = -(-m // chunk)
        assert chunk % conv2d_grouped.SPLIT_PIXELS == 0
        assert (splits - 1) * chunk < m <= splits * chunk
        assert splits == 1 or splits * programs <= conv2d_grouped.TARGET_PROGRAMS

