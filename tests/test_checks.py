"""fastcnn.ops._checks: the argument forms F.conv2d accepts are accepted, the rest
rejected with the op and argument named."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad

from fastcnn import ops
from fastcnn.ops._checks import pair


@pytest.mark.parametrize("value, want", [(2, [2, 2]), ((1, 3), [1, 3]), ([2], [2, 2]), ((1,), [1, 1]),
                                         (np.int64(3), [3, 3]), ((np.int32(1), torch.tensor(2)), [1, 2])])
def test_pair_takes_what_conv2d_takes(value, want):
    assert pair("op", "stride", value, 1) == want


@pytest.mark.parametrize("value", [1.0, (1, 2, 3), (True, 1), "2", ()])
def test_pair_rejects_the_rest(value):
    with pytest.raises(ValueError, match="op: argument 'padding' must be an int or a pair of ints"):
        pair("op", "padding", value, 0)


def test_conv2d_with_one_element_and_numpy_arguments_matches_f_conv2d():
    x, w = torch.randn(1, 2, 7, 6, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    for kw in (dict(padding=(1,)), dict(stride=np.int64(2), padding=np.int32(1)), dict(dilation=[2])):
        torch.testing.assert_close(ops.conv2d(x, w, **kw), F.conv2d(x, w, **kw))


@pytest.mark.parametrize("kernel, padding, dilation", [
    ((3, 3), "same", (1, 1)), ((4, 4), "same", (1, 1)), ((4, 3), "same", (2, 1)), ((2, 5), "same", (3, 2)),
    ((3, 3), "valid", (1, 1)), ((3, 5), 2, (1, 1)), ((3, 3), (0, 2), (2, 1)),
])
def test_resolve_padding_gives_f_conv2d_output_sizes(kernel, padding, dilation):
    """One resolver for F.conv2d's padding forms: normalize_conv_args pads the input with
    its extra row/column, FusedConv2dBN.output_shape adds it; both give F.conv2d's size."""
    from fastcnn.nn.fused import FusedConv2dBN
    from fastcnn.ops.conv2d import resolve_padding
    x = torch.randn(2, 3, 9, 8)
    conv = torch.nn.Conv2d(3, 5, kernel, padding=padding, dilation=dilation)
    want = F.conv2d(x, conv.weight, None, 1, padding, dilation).shape
    sym, extra = resolve_padding("op", conv.weight.shape, [1, 1], padding, list(dilation))
    assert len(sym) == len(extra) == 2 and set(extra) <= {0, 1}
    assert FusedConv2dBN.from_torch(conv).output_shape(x) == want
    assert ops.conv2d(x, conv.weight, None, 1, padding, dilation).shape == want


@pytest.mark.parametrize("padding, stride, match", [
    ("same", [2, 2], "padding='same' is not supported for strided convolutions"),
    ("full", [1, 1], "argument 'padding' must be 'same', 'valid', an int or a pair"),
    (1.5, [1, 1], "argument 'padding' must be an int or a pair of ints"),
])
def test_resolve_padding_rejects_the_rest(padding, stride, match):
    from fastcnn.ops.conv2d import resolve_padding
    with pytest.raises(ValueError, match=f"op: {match}"):
        resolve_padding("op", (5, 3, 3, 3), stride, padding, [1, 1])


# Every public op on a small float64 input x, as a function of x alone.
_W = torch.randn(3, 2, 3, 3, dtype=torch.float64)
OPS_OF_X = {
    "conv2d": lambda x: ops.conv2d(x, _W, padding=1),
    "conv_bn_act": lambda x: ops.conv_bn_act(x, _W, None, torch.ones(3).double(), torch.zeros(3).double(),
                                             torch.zeros(3).double(), torch.ones(3).double(), training=False),
    "depthwise_conv2d": lambda x: ops.depthwise_conv2d(x, _W[:2, :1]),
    "separable_conv2d": lambda x: ops.separable_conv2d(x, _W[:2, :1], _W[:, :, :1, :1]),
    "local_response_norm": lambda x: ops.local_response_norm(x, 3),
    "layer_norm": lambda x: ops.layer_norm(x, (6,)),
    "bias_act": lambda x: ops.bias_act(x, None, "gelu"),
    "attention": lambda x: ops.attention(x, x, x),
}


@pytest.mark.parametrize("name", list(OPS_OF_X))
def test_unsupported_autograd_modes_raise_instead_of_giving_zeros(name):
    """A custom op without a JVP rule gives a zero tangent under forward-mode AD with
    no error, and torch.func.grad fails inside autograd.Function: both are refused
    with the op named. Reverse mode and vmap work."""
    fn, x = OPS_OF_X[name], torch.randn(2, 2, 5, 6, dtype=torch.float64)
    match = rf"fastcnn\.{name}: forward-mode AD"
    with pytest.raises(NotImplementedError, match=match):
        torch.func.jvp(fn, (x,), (torch.ones_like(x),))
    with forward_ad.dual_level():
        with pytest.raises(NotImplementedError, match=match):
            fn(forward_ad.make_dual(x, torch.ones_like(x)))
        fn(x)  # a plain tensor inside a dual level is fine
    with pytest.raises(NotImplementedError, match=rf"fastcnn\.{name}: torch\.func\.grad"):
        torch.func.grad(lambda x: fn(x).sum())(x)
    x.requires_grad_()
    assert torch.autograd.grad(fn(x).sum(), x)[0].shape == x.shape
    batched = torch.func.vmap(lambda xi: fn(xi[None])[0])(x.detach())
    torch.testing.assert_close(batched, fn(x.detach()))
