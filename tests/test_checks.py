"""fastcnn.ops._checks: the argument forms F.conv2d accepts are accepted, the rest
rejected with the op and argument named."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastcnn import ops
from fastcnn.ops._checks import pair


@pytest.mark.parametrize("value, want", [(2, [2, 2]), ((1, 3), [1, 3]), ([2], [2, 2]), ((1,), [1, 1]),
                                         (np.int64(3), [3, 3]), ((np.int32(1), torch.tensor(2)), [1, 2])])
def test_pair_takes_what_conv2d_takes(value, want):
    assert pair("op", "stride", value, 1) == want


@pytest.mark.parametrize("value", [1.0, (1, 2, 3), (True, 1), "2", ()])
def test_pair_rejects_the_rest(value):
    with pytest.raises(ValueError, match="op: argument 'padding' must be an int or a pair of ints"):
        pair("op", "padding", value, 0)


def test_conv2d_with_one_element_and_numpy_arguments_matches_f_conv2d():
    x, w = torch.randn(1, 2, 7, 6, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    for kw in (dict(padding=(1,)), dict(stride=np.int64(2), padding=np.int32(1)), dict(dilation=[2])):
        torch.testing.assert_close(ops.conv2d(x, w, **kw), F.conv2d(x, w, **kw))
