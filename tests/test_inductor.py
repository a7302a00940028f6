"""torch.compile's default backend, Inductor, over a model fastcnn.nn.convert() has
rewritten, in training mode: one forward and backward against float64 eager torch.
The other compile tests use backend="aot_eager" (the graph, fake kernels and
autograd, cheaply); Inductor also re-plans layouts around the custom ops, copies
BatchNorm's running-stat updates back out of the functional graph and generates the
code between the ops, which is what a user's torch.compile(model) runs. About a
minute on the CPU, most of it Inductor compiling C++."""
import copy

import torch
import torch.nn as nn

import fastcnn.nn as fnn
from helpers import DEVICE, assert_close


class Hybrid(nn.Module):
    """A CNN stem and a transformer block, in plain torch."""
    def __init__(self, c=8, d=16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.lrn = nn.LocalResponseNorm(3)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.proj = nn.Conv2d(c, d, 2, stride=2)
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.fc, self.act = nn.Linear(d, 2 * d), nn.GELU()
        self.head = nn.Linear(2 * d, 5)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        y = self.dw(self.lrn(y))
        t = self.proj(y).flatten(2).transpose(1, 2)
        h = self.norm(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.act(self.fc(t))).mean(1)


def test_converted_model_trains_under_inductor():
    torch.manual_seed(0)
    ref = Hybrid().to(DEVICE)
    model = fnn.convert(copy.deepcopy(ref))
    assert {type(m).__name__ for m in model.modules()} >= {
        "FusedConv2dBN", "LocalResponseNorm", "MultiheadSelfAttention", "LayerNorm", "Linear"}
    x = torch.randn(2, 3, 9, 11, device=DEVICE).contiguous(memory_format=torch.channels_last)
    out = torch.compile(model, fullgraph=True)(x)
    out.square().sum().backward()
    ref64 = copy.deepcopy(ref).double()
    want = ref64(x.double())
    want.square().sum().backward()
    assert_close(out, want, torch.float32, what="output")
    for (name, p), (_, q) in zip(model.named_parameters(), ref64.named_parameters(), strict=True):
        assert_close(p.grad, q.grad, torch.float32, factor=4, what=f"{name}.grad")
    for (name, b), (_, q) in zip(model.named_buffers(), ref64.named_buffers(), strict=True):
        if b.is_floating_point():  # BatchNorm's running statistics, updated once
            assert_close(b, q, torch.float32, what=name)
        else:
            assert torch.equal(b, q), name


def test_dynamic_shapes_compile_once():
    """torch.compile(dynamic=True): a converted model takes another batch size and
    image size (so another sequence length) without recompiling, and every op's fake
    kernel follows the symbolic shapes. aot_eager: the graph is what is checked here."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch.manual_seed(0)
    model = fnn.convert(Hybrid().to(DEVICE)).eval()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, dynamic=True, fullgraph=True)
    for n, size in ((2, 8), (3, 12)):  # not 0 or 1: dynamo specializes those sizes
        x = torch.randn(n, 3, size, size + 2, device=DEVICE)
        assert_close(compiled(x), model(x), torch.float32, what=f"batch {n}, {size}x{size + 2}")
        if n == 2:
            frames = counter.frame_count
    assert counter.frame_count == frames, "a new shape recompiled"
