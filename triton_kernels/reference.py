"""PyTorch math for every kernel: the ``reference`` backend, the test oracle (run in
float64) and the baseline the benchmarks import. Low-precision inputs are computed
in fp32 and rounded once at the end, like a kernel with an fp32 accumulator.

On CUDA, the ``reference`` backend runs with cuDNN disabled (ATen's own im2col
kernels), so it stays an independent check of the ``cudnn`` backend.
"""
import torch
import torch.nn.functional as F

ACTIVATION_FNS = {
    "none": lambda z: z,
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "gelu": F.gelu,
}


def activation_grad(z, activation):
    """d act(z) / dz, written out: custom-op implementations run below autograd, so
    they cannot differentiate ACTIVATION_FNS themselves."""
    if activation == "none":
        return torch.ones_like(z)
    if activation == "relu":
        return (~(z <= 0)).to(z.dtype)  # 1 at NaN, as PyTorch's relu backward
    if activation == "relu6":
        return (~((z <= 0) | (z >= 6))).to(z.dtype)
    if activation == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    if activation == "gelu":
        return 0.5 * (1 + torch.erf(z * 0.7071067811865476)) + z * torch.exp(-0.5 * z * z) * 0.3989422804014327
    raise ValueError(f"unknown activation {activation!r}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every op computes in and keeps its saved statistics in (BatchNorm's
    mean / var, LayerNorm's mean / rstd, LRN's scale, attention's lse): fp64 for fp64,
    else fp32. The one definition: kernels, wrappers and tests all call this."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def conv2d_forward(x, w, bias, residual, stride, padding, dilation, groups, activation="none"):
    """act(conv2d(x, w, bias) + residual)."""
    ct = compute_dtype(x.dtype)
    y = F.conv2d(x.to(ct), w.to(ct), None if bias is None else bias.to(ct), stride, padding, dilation, groups)
    if residual is not None:
        y = y + residual.to(ct)
    return ACTIVATION_FNS[activation](y).to(x.dtype)


def conv2d_input_grad(grad_out, w, input_shape, stride, padding, dilation, groups):
    ct = compute_dtype(grad_out.dtype)
    dx, _, _ = torch.ops.aten.convolution_backward(
        grad_out.to(ct), grad_out.new_empty(input_shape, dtype=ct), w.to(ct), None,
        stride, padding, dilation, False, [0, 0], groups, [True, False, False])
    return dx.to(grad_out.dtype)


def conv2d_weight_grad(grad_out, x, weight_shape, stride, padding, dilation, groups):
    ct = compute_dtype(grad_out.dtype)
    _, dw, _ = torch.ops.aten.convolution_backward(
        grad_out.to(ct), x.to(ct), x.new_empty(weight_shape, dtype=ct), None,
        stride, padding, dilation, False, [0, 0], groups, [False, True, False])
    return dw.to(x.dtype)


def batch_stats(y):
    """Per-channel mean and biased variance of an (N, C, H, W) tensor, in fp32+."""
    y = y.to(compute_dtype(y.dtype))
    if y.numel() == 0:
        nan = y.new_full((y.shape[1],), float("nan"))
        return nan, nan.clone()
    var, mean = torch.var_mean(y, dim=(0, 2, 3), unbiased=False)
    return mean, var


def bn_act_forward(y, mean, invstd, gamma, beta, residual, activation):
    """act((y - mean) * invstd * gamma + beta + residual), per channel of (N, C, H, W)."""
    ct = compute_dtype(y.dtype)
    shape = (1, -1, 1, 1)
    z = (y.to(ct) - mean.to(ct).view(shape)) * (invstd.to(ct) * gamma.to(ct)).view(shape) + beta.to(ct).view(shape)
    if residual is not None:
        z = z + residual.to(ct)
    return ACTIVATION_FNS[activation](z).to(y.dtype)


def bn_act_backward(grad_out, y, mean, invstd, gamma, beta, residual, activation):
    """Gradients (dy, dgamma, dbeta, dresidual) of bn_act_forward in training mode,
    where mean and invstd are the batch statistics of y:
        dz      = grad_out * act'(z)            (z: the pre-activation value)
        dbeta   = sum(dz),  dgamma = sum(dz * yhat)
        dy      = gamma * invstd * (dz - (dbeta + yhat * dgamma) / count)
    dresidual is dz (None without a residual)."""
    ct = compute_dtype(y.dtype)
    shape = (1, -1, 1, 1)
    yhat = (y.to(ct) - mean.to(ct).view(shape)) * invstd.to(ct).view(shape)
    z = yhat * gamma.to(ct).view(shape) + beta.to(ct).view(shape)
    if residual is not None:
        z = z + residual.to(ct)
    dz = grad_out.to(ct) * activation_grad(z, activation)
    count = y.numel() // y.shape[1]
    dbeta = dz.sum((0, 2, 3))
    dgamma = (dz * yhat).sum((0, 2, 3))
    dy = (gamma.to(ct) * invstd.to(ct)).view(shape) * (dz - (dbeta.view(shape) + yhat * dgamma.view(shape)) / count)
    dres = dz.to(residual.dtype) if residual is not None else None
    return dy.to(y.dtype), dgamma.to(gamma.dtype), dbeta.to(beta.dtype), dres
