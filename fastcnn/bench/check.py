"""The CPU check ``fastcnn bench`` runs where there is no GPU: the Triton kernels,
through Triton's interpreter and the whole op stack, against float64 references on
small shapes. It checks correctness; it measures nothing."""
import time

import torch


def _rel(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def _conv_case(name, dtype, n, c, h, w, k, r, stride, padding, groups):
    from fastcnn import ops
    x = torch.randn(n, c, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    wt = torch.randn(k, c // groups, r, r, dtype=dtype).requires_grad_()
    out = ops.conv2d(x, wt, None, stride, padding, 1, groups, algo="triton")
    g = torch.randn_like(out)
    dx, dw = torch.autograd.grad(out, (x, wt), g)
    x64, w64 = x.detach().double().requires_grad_(), wt.detach().double().requires_grad_()
    ref = torch.nn.functional.conv2d(x64, w64, None, stride, padding, 1, groups)
    rdx, rdw = torch.autograd.grad(ref, (x64, w64), g.double())
    return name, max(_rel(out, ref), _rel(dx, rdx), _rel(dw, rdw))


def _conv_bn_relu_case(dtype):
    from fastcnn import ops
    x = torch.randn(2, 16, 9, 9, dtype=dtype).requires_grad_()
    wt = torch.randn(32, 16, 3, 3, dtype=dtype).requires_grad_()
    gamma, beta = torch.rand(32, dtype=dtype) + 0.5, torch.randn(32, dtype=dtype)
    out = ops.conv_bn_act(x, wt, None, gamma, beta, None, None, training=True, padding=1, algo="triton")
    g = torch.randn_like(out)
    dx, dw = torch.autograd.grad(out, (x, wt), g)
    x64, w64 = x.detach().double().requires_grad_(), wt.detach().double().requires_grad_()
    y = torch.nn.functional.conv2d(x64, w64, None, 1, 1)
    ref = torch.relu(torch.nn.functional.batch_norm(y, None, None, gamma.double(), beta.double(), training=True))
    rdx, rdw = torch.autograd.grad(ref, (x64, w64), g.double())
    return f"conv_bn_relu train {_short(dtype)}", max(_rel(out, ref), _rel(dx, rdx), _rel(dw, rdw))


def _attention_case(dtype):
    import torch.nn.functional as F
    from fastcnn import ops
    q, k, v = (torch.randn(1, 2, 37, 64, dtype=dtype).requires_grad_() for _ in range(3))
    out = ops.attention(q, k, v, causal=True, algo="triton")
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = F.scaled_dot_product_attention(*leaves, is_causal=True)
    refs = torch.autograd.grad(ref, leaves, g.double())
    return f"attention causal L=37 D=64 {_short(dtype)}", max([_rel(out, ref)] + [_rel(a, b) for a, b in
                                                                                zip(grads, refs)])


def _layer_norm_gelu_case(dtype):
    import torch.nn.functional as F
    from fastcnn import ops
    x, r = torch.randn(2, 5, 100, dtype=dtype).requires_grad_(), torch.randn(2, 5, 100, dtype=dtype)
    w, b = torch.rand(100, dtype=dtype) + 0.5, torch.randn(100, dtype=dtype)
    y, _ = ops.layer_norm(x, (100,), w, b, residual=r, algo="triton")
    out = ops.bias_act(y, b, "gelu", algo="triton")
    g = torch.randn_like(out)
    (dx,) = torch.autograd.grad(out, (x,), g)
    x64 = x.detach().double().requires_grad_()
    ref = F.gelu(F.layer_norm(x64 + r.double(), (100,), w.double(), b.double()) + b.double())
    (rdx,) = torch.autograd.grad(ref, (x64,), g.double())
    return f"layer_norm+residual, bias+gelu {_short(dtype)}", max(_rel(out, ref), _rel(dx, rdx))


def _short(dtype):
    return {torch.float32: "fp32", torch.float16: "fp16"}[dtype]


TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3}


def run_cpu_check(print_fn=print) -> bool:
    """Run the check, print a table, return True when every case is within tolerance."""
    cases = [
        lambda: _conv_case("conv2d 3x3 fp32", torch.float32, 2, 16, 11, 9, 24, 3, 1, 1, 1),
        lambda: _conv_case("conv2d 5x5 s2 fp16", torch.float16, 1, 8, 13, 13, 16, 5, 2, 2, 1),
        lambda: _conv_case("conv2d grouped 4x4ch fp32", torch.float32, 2, 16, 7, 7, 16, 3, 1, 1, 4),
        lambda: _conv_bn_relu_case(torch.float32),
        lambda: _attention_case(torch.float32),
        lambda: _attention_case(torch.float16),
        lambda: _layer_norm_gelu_case(torch.float32),
    ]
    ok = True
    print_fn(f"{'case':<36}{'max rel. error (fwd, grads)':>30}{'seconds':>10}")
    for case in cases:
        start = time.perf_counter()
        name, err = case()
        dtype = torch.float16 if "fp16" in name else torch.float32
        passed = err <= TOLERANCE[dtype]
        ok &= passed
        print_fn(f"{name:<36}{err:>30.2e}{time.perf_counter() - start:>10.1f}  {'ok' if passed else 'FAIL'}")
    return ok
