"""fastcnn.nn.DepthwiseConv2d: a depthwise torch.nn.Conv2d (groups == in_channels)
on fastcnn's kernels."""
from fastcnn.nn.conv import Conv2d


class DepthwiseConv2d(Conv2d):
    """``torch.nn.Conv2d(in_channels, in_channels * channel_multiplier, kernel_size,
    stride, padding, dilation, groups=in_channels, bias, padding_mode)``: same
    parameters and state_dict keys, computed by fastcnn.ops.conv2d (whose "cuda"
    backend is csrc/depthwise.cu for multipliers 1-2, 3/5/7 kernels, stride 1-2).
    Extra keyword: ``algo`` (see fastcnn.ops)."""

    def __init__(self, in_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 padding_mode="zeros", *, channel_multiplier=1, device=None, dtype=None, algo="auto"):
        if not isinstance(channel_multiplier, int) or channel_multiplier < 1:
            raise ValueError("fastcnn.nn.DepthwiseConv2d: argument 'channel_multiplier' must be a positive int, "
                             f"got {channel_multiplier!r}")
        super().__init__(in_channels, in_channels * channel_multiplier, kernel_size, stride, padding, dilation,
                         groups=in_channels, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype,
                         algo=algo)
        self.channel_multiplier = channel_multiplier
