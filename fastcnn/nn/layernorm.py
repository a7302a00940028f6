"""fastcnn.nn.LayerNorm: torch.nn.LayerNorm on fastcnn's kernels."""
import torch

from fastcnn.ops.layer_norm import layer_norm


class LayerNorm(torch.nn.LayerNorm):
    """torch.nn.LayerNorm with the same arguments, parameters and state_dict, computed
    by ``fastcnn.ops.layer_norm.layer_norm``. Extra keyword: ``algo`` (see
    fastcnn.ops). ``forward(input, residual=None)``: with a residual, normalizes
    input + residual and returns ``(y, input + residual)`` (the pre-norm block's
    fused add)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None, *, algo: str = "auto"):
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.algo = algo

    def forward(self, input, residual=None):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps,
                          residual=residual, algo=self.algo)

    @classmethod
    def from_torch(cls, module: torch.nn.LayerNorm, algo: str = "auto"):
        """A fastcnn module sharing ``module``'s parameters (no copy, no re-initialisation)."""
        new = cls(module.normalized_shape, module.eps, module.elementwise_affine, module.bias is not None,
                  device="meta", algo=algo)
        new.weight, new.bias = module.weight, module.bias
        new.train(module.training)
        return new

    def extra_repr(self):
        return super().extra_repr() + f", algo={self.algo!r}"


__all__ = ["LayerNorm"]
