"""fastcnn.nn.convert on a ResNet-style model written in plain torch: the swaps and
fusions it makes, equal outputs and gradients in eval and training mode, identical
running-stat updates, and state_dicts that load both ways."""
import copy

import pytest
import torch
import torch.nn as tnn
import torch.nn.utils.prune

import fastcnn.nn as fnn
from helpers import DEVICE, assert_close, make_input


class BasicBlock(tnn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU(inplace=True)  # used twice: must not be swapped out
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(tnn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.stem = tnn.Sequential(tnn.Conv2d(3, 16, 3, 1, 1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU())
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.head = tnn.Conv2d(32, 8, 1)  # no BatchNorm after it: a plain swap
        self.fc = tnn.Linear(8, num_classes)

    def forward(self, x):
        x = self.head(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, tnn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.fixture
def models():
    torch.manual_seed(0)
    plain = TinyResNet().to(DEVICE)
    _randomize_bn(plain)
    return plain, fnn.convert(copy.deepcopy(plain))


def test_what_convert_swaps_and_fuses(models):
    _, converted = models
    fused = [n for n, m in converted.named_modules() if isinstance(m, fnn.FusedConv2dBN)]
    assert fused == ["stem.0", "layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2",
                     "layer2.downsample.0"]
    acts = {n: converted.get_submodule(n).activation for n in fused}
    assert acts["layer1.conv1"] == "relu" and acts["layer1.conv2"] == "relu"  # conv2 took "+= identity" and relu
    assert acts["layer2.downsample.0"] == "none"
    assert type(converted.head) is fnn.Conv2d
    assert not any(type(m) is tnn.Conv2d for m in converted.modules())
    assert type(converted.layer1) is BasicBlock  # the class is kept


def test_state_dict_keys_and_loading(models):
    plain, converted = models
    assert list(plain.state_dict()) == list(converted.state_dict())
    converted.load_state_dict(plain.state_dict())
    plain.load_state_dict(converted.state_dict())


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_eval_outputs_and_grads_match(models, layout):
    plain, converted = models
    plain.eval(), converted.eval()
    x = make_input((2, 3, 12, 11), layout=layout, requires_grad=True)
    x64 = x.detach().double().requires_grad_()
    ref = copy.deepcopy(plain).double()(x64)
    out = converted(x)
    assert_close(out, ref, torch.float32, factor=10)
    ref.square().sum().backward()
    out.square().sum().backward()
    assert_close(x.grad, x64.grad, torch.float32, factor=10)


def test_training_step_and_running_stats_match(models):
    plain, converted = models
    plain64 = copy.deepcopy(plain).double()
    plain64.train(), converted.train()
    for _ in range(2):
        x = make_input((3, 3, 10, 10))
        ref, out = plain64(x.double()), converted(x)
        assert_close(out, ref, torch.float32, factor=10)
        ref.square().sum().backward()
        out.square().sum().backward()
    named64 = dict(plain64.named_parameters())
    for name, p in converted.named_parameters():
        assert_close(p.grad, named64[name].grad, torch.float32, factor=20, what=name)
    buffers64 = dict(plain64.named_buffers())
    for name, b in converted.named_buffers():
        if b.dtype.is_floating_point:
            assert_close(b, buffers64[name], torch.float32, factor=10, what=name)
        else:
            assert b.item() == buffers64[name].item() == 2, name


def test_convert_twice_changes_nothing(models):
    plain, converted = models
    converted.eval()
    x = make_input((1, 3, 9, 9))
    before = converted(x)
    again = fnn.convert(converted)
    assert again is converted
    assert_close(converted(x), before.double(), torch.float32)


def test_fuse_false_only_swaps():
    model = fnn.convert(TinyResNet(), fuse=False)
    assert not any(isinstance(m, fnn.FusedConv2dBN) for m in model.modules())
    assert sum(type(m) is fnn.Conv2d for m in model.modules()) == 7


def test_local_response_norm_is_swapped():
    model = fnn.convert(tnn.Sequential(tnn.Conv2d(3, 8, 3), tnn.ReLU(), tnn.LocalResponseNorm(5, 1e-3, 0.75, 2.0)))
    assert type(model[2]) is fnn.LocalResponseNorm and model[2].size == 5 and model[2].k == 2.0


class PlainViTBlock(tnn.Module):
    """A pre-norm transformer block in plain torch (timm / torchvision style)."""

    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.norm1 = tnn.LayerNorm(dim, eps=1e-6)
        self.attn = tnn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = tnn.LayerNorm(dim, eps=1e-6)
        self.mlp = tnn.Sequential(tnn.Linear(dim, 4 * dim), tnn.GELU(approximate="tanh"), tnn.Dropout(0.0),
                                  tnn.Linear(4 * dim, dim))
        self.head = tnn.Linear(dim, 5)
        self.act = tnn.SiLU()

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.act(self.head(x))


def test_transformer_modules_are_swapped_and_linear_activation_fused():
    model = PlainViTBlock().to(DEVICE)
    x = torch.randn(2, 7, 32, device=DEVICE)
    ref = copy.deepcopy(model)
    keys = model.state_dict().keys()
    fnn.convert(model, algo="triton")
    assert type(model.norm1) is fnn.LayerNorm and type(model.attn) is fnn.MultiheadSelfAttention
    assert (type(model.mlp[0]), model.mlp[0].activation, model.mlp[0].algo) == (fnn.Linear, "gelu_tanh", "triton")
    assert model.head.activation == "silu" and type(model.mlp[3]) is tnn.Linear  # nothing to fuse there
    assert model.state_dict().keys() == keys
    out, want = model(x), ref(x)
    assert_close(out, want.double(), factor=3)
    for a, b in zip(torch.autograd.grad(out.square().sum(), list(model.parameters())),
                    torch.autograd.grad(want.square().sum(), list(ref.parameters()))):
        assert_close(a, b.double(), factor=3)


class SamePaddingBlock(tnn.Module):
    """Conv2d(padding='same') -> BatchNorm2d -> + residual -> ReLU, as Keras-ported models write it."""

    def __init__(self, c):
        super().__init__()
        self.conv = tnn.Conv2d(c, c, 4, padding="same", bias=False)  # even kernel: PyTorch pads one more bottom/right
        self.bn = tnn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("training", [False, True])
def test_same_padding_conv_with_residual_is_fused(training):
    torch.manual_seed(0)
    plain = SamePaddingBlock(6).to(DEVICE)
    _randomize_bn(plain)
    converted = fnn.convert(copy.deepcopy(plain))
    assert isinstance(converted.conv, fnn.FusedConv2dBN) and converted.conv.activation == "relu"
    plain.train(training), converted.train(training)
    x = make_input((2, 6, 9, 7))
    ref = copy.deepcopy(plain).double()(x.double())
    assert_close(converted(x), ref, torch.float32, factor=10)


@pytest.mark.parametrize("root, twin_type", [(tnn.Conv2d(3, 4, 3), fnn.Conv2d), (tnn.LayerNorm(6), fnn.LayerNorm),
                                             (tnn.MultiheadAttention(8, 2), fnn.MultiheadSelfAttention)])
def test_a_swappable_root_is_replaced(root, twin_type):
    twin = fnn.convert(root, algo="triton")
    assert type(twin) is twin_type and twin.algo == "triton"
    assert all(a is b for a, b in zip(twin.parameters(), root.parameters()))


@pytest.mark.parametrize("activation", ["relu", "gelu", tnn.GELU(approximate="tanh")])
@pytest.mark.parametrize("training", [False, True])
def test_transformer_encoder_layer_feed_forward_is_fused(activation, training):
    """TransformerEncoderLayer does not trace with fx: convert fuses linear1 -> activation
    by hand and turns off torch's inference fast path (which would run none of
    fastcnn's modules); outputs and gradients stay torch's."""
    torch.manual_seed(0)
    plain = tnn.TransformerEncoderLayer(16, 2, 24, dropout=0.0, activation=activation, batch_first=True,
                                        norm_first=True).to(DEVICE).train(training)
    converted = fnn.convert(copy.deepcopy(plain), algo="triton")
    ref = copy.deepcopy(plain).double()
    want_act = activation if isinstance(activation, str) else "gelu_tanh"
    assert type(converted.linear1) is fnn.Linear and converted.linear1.activation == want_act
    assert type(converted.self_attn) is fnn.MultiheadSelfAttention
    assert converted.state_dict().keys() == plain.state_dict().keys()
    x = make_input((2, 9, 16))
    pad = torch.zeros(2, 9, dtype=torch.bool, device=DEVICE)
    pad[1, 6:] = True
    with torch.no_grad():  # the fast path's conditions (eval, no grad) for the plain layer
        assert_close(converted(x, src_key_padding_mask=pad), ref(x.double(), src_key_padding_mask=pad),
                     torch.float32, factor=10)
    out, want = converted(x), ref(x.double())
    assert_close(out, want, torch.float32, factor=10)
    for a, b in zip(torch.autograd.grad(out.square().sum(), list(converted.parameters())),
                    torch.autograd.grad(want.square().sum(), list(ref.parameters()))):
        assert_close(a, b, torch.float32, factor=10)


def test_hooks_survive_convert():
    """A swapped module's twin runs its hooks; a hooked conv, BN or activation is not
    fused away (its hooks would never run); removing a hook through its handle still
    works on the twin."""
    model = tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.Conv2d(4, 4, 1),
                           tnn.BatchNorm2d(4)).eval()
    seen = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append(("conv0", tuple(o.shape))))
    model[4].register_forward_pre_hook(lambda m, i: seen.append(("bn4", None)))
    x = torch.randn(1, 3, 6, 6)
    want = model(x)
    seen.clear()
    fnn.convert(model, algo="reference")
    assert type(model[0]) is fnn.Conv2d and type(model[1]) is tnn.BatchNorm2d  # not fused: conv0 is hooked
    assert type(model[3]) is fnn.Conv2d and type(model[4]) is tnn.BatchNorm2d  # not fused: bn4 is hooked
    torch.testing.assert_close(model(x), want)
    assert seen == [("conv0", (1, 4, 4, 4)), ("bn4", None)]
    handle.remove()
    model(x)
    assert seen[2:] == [("bn4", None)]


@pytest.mark.parametrize("wrap", [torch.nn.utils.weight_norm, torch.nn.utils.spectral_norm,
                                  lambda m: torch.nn.utils.prune.l1_unstructured(m, "weight", 0.5)],
                         ids=["weight_norm", "spectral_norm", "prune"])
def test_a_conv_whose_pre_hook_computes_its_weight_is_left_alone(wrap):
    model = tnn.Sequential(wrap(tnn.Conv2d(3, 4, 3)), tnn.ReLU()).eval()
    x = torch.randn(1, 3, 6, 6)
    want = model(x)
    with pytest.warns(UserWarning, match="forward pre-hooks"):
        fnn.convert(model)
    assert type(model[0]) is tnn.Conv2d
    torch.testing.assert_close(model(x), want)


class ConvReluNet(tnn.Module):
    """VGG-style convolutions followed straight by activations (no BatchNorm)."""

    def __init__(self):
        super().__init__()
        self.features = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.ReLU(inplace=True),
                                       tnn.Conv2d(8, 8, 3, padding=1), tnn.ReLU6())
        self.conv = tnn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(self.features(x))
        return torch.nn.functional.silu(y), y  # y has a second user: its conv keeps no activation


@pytest.mark.parametrize("training", [False, True])
def test_conv_activation_pairs_take_the_epilogue(training):
    torch.manual_seed(0)
    plain = ConvReluNet().to(DEVICE).train(training)
    converted = fnn.convert(copy.deepcopy(plain), algo="reference")
    assert [converted.features[i].activation for i in (0, 2)] == ["relu", "relu6"]
    assert converted.conv.activation == "none"
    assert converted.state_dict().keys() == plain.state_dict().keys()
    x = make_input((2, 3, 7, 9), requires_grad=True)
    ref = copy.deepcopy(plain).double()
    x64 = x.detach().double().requires_grad_()
    outs, refs = converted(x), ref(x64)
    for o, r in zip(outs, refs):
        assert_close(o, r, torch.float32)
    grads = torch.autograd.grad(sum(o.square().sum() for o in outs), [x, *converted.parameters()])
    want = torch.autograd.grad(sum(r.square().sum() for r in refs), [x64, *ref.parameters()])
    for a, b in zip(grads, want):
        assert_close(a, b, torch.float32)
