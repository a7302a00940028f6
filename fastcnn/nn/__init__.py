"""Drop-in torch.nn modules on fastcnn's ops (same constructor arguments and
state_dict keys as their torch.nn twins), fused modules, and ``convert``."""
from fastcnn.nn.attention import MultiheadSelfAttention  # noqa: F401
from fastcnn.nn.conv import Conv2d  # noqa: F401
from fastcnn.nn.convert import convert  # noqa: F401
from fastcnn.nn.depthwise import DepthwiseConv2d  # noqa: F401
from fastcnn.nn.fused import ConvBNAct, ConvBNReLU, FusedConv2dBN  # noqa: F401
from fastcnn.nn.layernorm import LayerNorm  # noqa: F401
from fastcnn.nn.linear import Linear  # noqa: F401
from fastcnn.nn.lrn import LocalResponseNorm  # noqa: F401
from fastcnn.nn.separable import DepthwiseSeparableConv2d  # noqa: F401

__all__ = ["Conv2d", "ConvBNAct", "ConvBNReLU", "DepthwiseConv2d", "DepthwiseSeparableConv2d", "FusedConv2dBN", "LayerNorm", "Linear",
           "LocalResponseNorm", "MultiheadSelfAttention", "convert"]
