"""fastcnn.nn.Linear: torch.nn.Linear with a fused bias + activation epilogue."""
import torch
import torch.nn.functional as F

from fastcnn.ops.bias_act import ACTIVATION_NAMES, bias_act


class Linear(torch.nn.Linear):
    """torch.nn.Linear with the same arguments, parameters and state_dict, followed by
    an activation. Extra keywords: ``activation`` (one of "none", "relu", "relu6",
    "silu", "gelu", "gelu_tanh") and ``algo`` (see fastcnn.ops).

    With an activation, the matmul runs without its bias (cuBLAS, via F.linear) and
    ``fastcnn.ops.bias_act.bias_act`` adds the bias and applies the activation in one
    elementwise pass, instead of PyTorch's bias epilogue plus a separate activation
    pass. With activation="none" it is exactly F.linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 activation: str = "none", algo: str = "auto"):
        if activation not in ACTIVATION_NAMES:
            raise ValueError(f"fastcnn.nn.Linear: argument 'activation' must be one of {ACTIVATION_NAMES}, "
                             f"got {activation!r}")
        super().__init__(in_features, out_features, bias, device, dtype)
        self.activation = activation
        self.algo = algo

    def forward(self, input):
        if self.activation == "none":
            return F.linear(input, self.weight, self.bias)
        return bias_act(F.linear(input, self.weight), self.bias, self.activation, algo=self.algo)

    @classmethod
    def from_torch(cls, module: torch.nn.Linear, activation: str = "none", algo: str = "auto"):
        """A fastcnn module sharing ``module``'s parameters (no copy, no re-initialisation)."""
        new = cls(module.in_features, module.out_features, module.bias is not None, device="meta",
                  activation=activation, algo=algo)
        new.weight, new.bias = module.weight, module.bias
        new.train(module.training)
        return new

    def extra_repr(self):
        return super().extra_repr() + f", activation={self.activation!r}, algo={self.algo!r}"


__all__ = ["Linear"]
