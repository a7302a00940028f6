"""fastcnn's public ops. Each is a torch.library custom op (``torch.ops.fastcnn.*``)
with a fake kernel and autograd, and takes ``algo=``:

- ``"auto"`` (default): the fastest backend for the call's shapes, layouts and
  dtype, timed once on CUDA and cached on disk; on CPU, ``"reference"`` (or the
  Triton kernels under ``TRITON_INTERPRET=1``).
- ``"triton"``, ``"cuda"``, ``"cudnn"``, ``"reference"``: that backend, falling back
  (with a warning) to the next one that supports the call; never a wrong answer.
"""
from fastcnn.ops._dispatch import ALGOS, AUTO_CACHE, BACKENDS  # noqa: F401
from fastcnn.ops.attention import attention  # noqa: F401
from fastcnn.ops.bias_act import bias_act  # noqa: F401
from fastcnn.ops.conv2d import conv2d  # noqa: F401
from fastcnn.ops.conv_bn_act import conv_bn_act, fold_bn  # noqa: F401
from fastcnn.ops.depthwise import depthwise_conv2d  # noqa: F401
from fastcnn.ops.layer_norm import layer_norm  # noqa: F401
from fastcnn.ops.lrn import local_response_norm  # noqa: F401
from fastcnn.ops.separable import separable_conv2d  # noqa: F401

__all__ = ["attention", "bias_act", "conv2d", "conv_bn_act", "fold_bn", "depthwise_conv2d", "layer_norm",
           "local_response_norm", "separable_conv2d", "ALGOS", "BACKENDS"]
