"""fastcnn.nn.LocalResponseNorm: torch.nn.LocalResponseNorm on fastcnn's kernels."""
import torch

from fastcnn.ops.lrn import local_response_norm


class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """torch.nn.LocalResponseNorm with the same arguments (size, alpha, beta, k) and
    behaviour, computed by ``fastcnn.ops.local_response_norm`` for 3-d and 4-d
    inputs (other ranks use PyTorch's). Extra keywords: ``within_channel`` (Caffe's
    WITHIN_CHANNEL mode: a size x size spatial window, 4-d inputs only) and ``algo``
    (see fastcnn.ops)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *,
                 within_channel: bool = False, algo: str = "auto"):
        super().__init__(size, alpha, beta, k)
        self.within_channel = within_channel
        self.algo = algo

    def forward(self, input):
        if input.dim() not in (3, 4) and not self.within_channel:
            return super().forward(input)
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k,
                                   within_channel=self.within_channel, algo=self.algo)

    @classmethod
    def from_torch(cls, module: torch.nn.LocalResponseNorm, algo: str = "auto"):
        new = cls(module.size, module.alpha, module.beta, module.k, algo=algo)
        new.train(module.training)
        return new

    def extra_repr(self):
        extra = ", within_channel=True" if self.within_channel else ""
        return super().extra_repr() + extra + f", algo={self.algo!r}"


__all__ = ["LocalResponseNorm"]
