"""fastcnn.nn.Conv2d: torch.nn.Conv2d on fastcnn's kernels."""
import torch
import torch.nn.functional as F

from fastcnn import ops


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d with the same arguments, parameters and state_dict, computed by
    ``fastcnn.ops.conv2d``. Extra keywords: ``algo`` (see fastcnn.ops) and
    ``activation`` (relu, relu6, silu, gelu: applied in the convolution's epilogue;
    ``fastcnn.nn.convert`` sets it where a Conv2d's only user is that activation)."""

    def __init__(self, *args, algo: str = "auto", activation: str = "none", **kwargs):
        super().__init__(*args, **kwargs)
        self.algo = algo
        self.activation = activation

    def padded_input(self, input):
        """(input, padding) with a non-zero padding_mode applied, as torch.nn.Conv2d does."""
        if self.padding_mode == "zeros":
            return input, self.padding
        return F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0

    def _conv_forward(self, input, weight, bias, activation=None):
        """``activation``: this call's (fastcnn.nn.fused.conv_act_forward), else the module's."""
        input, padding = self.padded_input(input)
        return ops.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                          activation=self.activation if activation is None else activation, algo=self.algo)

    @classmethod
    def from_torch(cls, conv: torch.nn.Conv2d, algo: str = "auto", **extra):
        """A fastcnn module sharing ``conv``'s parameters (no copy, no re-initialisation)."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                  device="meta", algo=algo, **extra)
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new

    def extra_repr(self):
        act = f", activation={self.activation!r}" if self.activation != "none" else ""
        return super().extra_repr() + act + f", algo={self.algo!r}"
