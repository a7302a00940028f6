"""Backends whose backward differentiates an ATen composite (attention's SDPA,
F.local_response_norm, bias + activation) run autograd inside a custom op, where
torch.library has switched autograd off; ``autograd_inside_op`` switches it back
on. Each is called here inside a custom op (on CPU: on the GPU these are the
"cudnn" backends) and compared with autograd outside one."""
import pytest
import torch
import torch.nn.functional as F

from fastcnn.ops import lrn as lrn_ops
from fastcnn.ops.attention import _cudnn_backward as sdpa_backward
from fastcnn.ops.bias_act import _aten_backward as bias_act_aten_backward
from helpers import assert_close

CASES = {
    # name: (backward inside the op (grad, *inputs) -> grads, forward for autograd, input shapes)
    "sdpa": (lambda do, q, k, v: sdpa_backward(do, q, k, v, None, None, None, True, 0.5, 0.0, 0, False),
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5),
             [(1, 2, 6, 32)] * 3),
    "local_response_norm": (lambda dy, x: [lrn_ops._aten_backward(dy, x, None, None, 3, 2.0, 0.75, 1.5, False)],
                            lambda x: F.local_response_norm(x, 3, 2.0, 0.75, 1.5), [(2, 5, 4, 3)]),
    "bias_gelu": (lambda dy, x, b: bias_act_aten_backward(dy, x, b, "gelu", True),
                  lambda x, b: F.gelu(x + b), [(3, 7), (7,)]),
}


@torch.library.custom_op("fastcnn_test::aten_backward", mutates_args=())
def aten_backward_op(name: str, grad: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [g.clone() for g in CASES[name][0](grad, *inputs)]


@pytest.mark.parametrize("name", CASES)
def test_aten_backward_inside_a_custom_op(name):
    _, forward, shapes = CASES[name]
    inputs = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    out = forward(*inputs)
    grad = torch.randn_like(out)
    want = torch.autograd.grad(out, inputs, grad)
    got = aten_backward_op(name, grad, [t.detach() for t in inputs])
    for g, w in zip(got, want):  # bias_act's dbias is fp32 by design
        assert_close(g.double(), w, torch.float64 if g.dtype == torch.float64 else torch.float32)
