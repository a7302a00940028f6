"""The classic architectures of the zoo (LeNet-5 to FractalNet): published parameter
counts, output shapes, AlexNet's LRN, a training step through every model, fastcnn
kernels (Triton, interpreted on CPU) against the reference backend on tiny
configurations covering every block kind, and ``fastcnn.nn.convert`` leaving every
model (of the whole zoo) unchanged. ``fastcnn.models.summary``: tests/test_summary.py."""
import copy
import random

import pytest
import torch
from torch import nn

import fastcnn.models as M
import fastcnn.nn
from fastcnn.models import alexnet, densenet, fractalnet, googlenet, inception, nin, squeezenet, vgg
from helpers import DEVICE, assert_close

# name: (parameters, num_classes, source). "torchvision": the num_params of the
# model's weights in torchvision's documentation; "timm": timm's model card
# (= the Cadene pretrainedmodels port of the TF-slim checkpoint); the others as noted.
PARAMS = {
    "lenet5": (61_706, 10, "LeCun et al. 1998 as usually read (C3 fully connected, linear output): "
                            "156 + 2,416 + 48,120 + 10,164 + 850"),
    "alexnet": (61_100_840, 1000, "torchvision alexnet"),
    "alexnet_v1": (60_965_224, 1000, "Krizhevsky et al. 2012, two towers: Caffe bvlc_alexnet"),
    "zfnet": (62_357_608, 1000, "Zeiler & Fergus 2014, Fig. 3 layer sizes (computed: 3,726,464 conv "
                                 "+ 58,631,144 FC)"),
    "vgg11": (132_863_336, 1000, "torchvision vgg11"),
    "vgg11_bn": (132_868_840, 1000, "torchvision vgg11_bn"),
    "vgg11_lrn": (132_863_336, 1000, "Simonyan & Zisserman Table 2 (A-LRN = A, 133M; LRN has no parameters)"),
    "vgg13": (133_047_848, 1000, "torchvision vgg13"),
    "vgg13_bn": (133_053_736, 1000, "torchvision vgg13_bn"),
    "vgg16": (138_357_544, 1000, "torchvision vgg16"),
    "vgg16_bn": (138_365_992, 1000, "torchvision vgg16_bn"),
    "vgg19": (143_667_240, 1000, "torchvision vgg19"),
    "vgg19_bn": (143_678_248, 1000, "torchvision vgg19_bn"),
    "nin_cifar": (966_986, 10, "Lin et al. 2014, CIFAR-10 network (~0.97M)"),
    "nin": (7_595_176, 1000, "Caffe model zoo NIN-ImageNet (computed from its layer sizes, ~7.6M)"),
    "squeezenet1_0": (1_248_424, 1000, "torchvision squeezenet1_0"),
    "squeezenet1_1": (1_235_496, 1000, "torchvision squeezenet1_1"),
    "densenet121": (7_978_856, 1000, "torchvision densenet121"),
    "densenet161": (28_681_000, 1000, "torchvision densenet161"),
    "densenet169": (14_149_480, 1000, "torchvision densenet169"),
    "densenet201": (20_013_928, 1000, "torchvision densenet201"),
    "googlenet": (6_624_904, 1000, "torchvision googlenet (aux_logits=False, as its weights ship)"),
    "inception_v3": (27_161_264, 1000, "torchvision inception_v3 (with AuxLogits)"),
    "inception_v4": (42_679_816, 1000, "timm inception_v4"),
    "inception_resnet_v2": (55_843_464, 1000, "timm inception_resnet_v2"),
    "fractalnet20": (33_724_618, 10, "pytorchcv fractalnet_cifar10 (the paper's 38.6M is not reproducible "
                                     "from its description)"),
}
PARAM_CONFIG = {"googlenet": {"aux_logits": False}}

# name: (input size for the shape test, expected output of model.features when checked)
SHAPES = {
    "lenet5": ((1, 32, 32), (120, 1, 1)), "alexnet": ((3, 224, 224), (256, 6, 6)),
    "alexnet_v1": ((3, 227, 227), (256, 6, 6)), "zfnet": ((3, 224, 224), (256, 6, 6)),
    "nin_cifar": ((3, 32, 32), None), "nin": ((3, 224, 224), None),
    "squeezenet1_0": ((3, 224, 224), (512, 13, 13)), "squeezenet1_1": ((3, 224, 224), (512, 13, 13)),
    "fractalnet20": ((3, 32, 32), None),
    # reduced sizes for the big ones
    "googlenet": ((3, 64, 64), None), "inception_v3": ((3, 75, 75), None),
    "inception_v4": ((3, 75, 75), None), "inception_resnet_v2": ((3, 75, 75), None),
    "densenet121": ((3, 32, 32), (1024, 1, 1)), "densenet161": ((3, 32, 32), (2208, 1, 1)),
    "densenet169": ((3, 32, 32), (1664, 1, 1)), "densenet201": ((3, 32, 32), (1920, 1, 1)),
}
SHAPES.update({n: ((3, 32, 32), (512, 1, 1)) for n in PARAMS if n.startswith("vgg")})

CLASSIC = sorted(PARAMS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many small convolutions: on the shared 2-core machines, one
    intra-op thread is several times faster than two that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def build(name, **config):
    config.setdefault("algo", "reference")
    return M.create(name, num_classes=PARAMS[name][1], **config).to(DEVICE)


def test_registry_lists_every_classic_model():
    assert set(CLASSIC) <= set(M.list_models())
    assert set(M.list_models("vgg*")) == {"vgg11", "vgg11_bn", "vgg11_lrn", "vgg13", "vgg13_bn", "vgg16",
                                          "vgg16_bn", "vgg19", "vgg19_bn"}


@pytest.mark.parametrize("name", CLASSIC)
def test_parameter_count_is_published_one(name):
    expected, num_classes, source = PARAMS[name]
    with torch.device("meta"):  # no memory, no initialisation
        model = M.create(name, num_classes=num_classes, **PARAM_CONFIG.get(name, {}))
    assert n_params(model) == expected, f"{name}: {n_params(model):,} != {expected:,} ({source})"


def test_parameter_counts_with_auxiliary_classifiers():
    with torch.device("meta"):
        assert n_params(M.create("googlenet")) == 13_004_888  # + 2 x (1x1 conv + BN + fc1 + fc2)
        assert n_params(M.create("inception_v3", aux_logits=False)) == 23_834_568


def test_models_use_fastcnn_convolutions_and_lrn_only():
    for name in CLASSIC:
        with torch.device("meta"):
            model = M.create(name, algo="triton")
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(type(m) is fastcnn.nn.Conv2d for m in convs), name
        assert all(m.algo == "triton" for m in convs), f"{name}: algo not passed to every conv"
        lrns = [m for m in model.modules() if isinstance(m, nn.LocalResponseNorm)]
        assert all(type(m) is fastcnn.nn.LocalResponseNorm and m.algo == "triton" for m in lrns), name


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_shape(name):
    (size, features_shape), nc = SHAPES[name], PARAMS[name][1]
    model = build(name).eval()
    x = torch.randn(1, *size, device=DEVICE)
    with torch.no_grad():
        assert model(x).shape == (1, nc)
        if features_shape is not None:
            assert model.features(x).shape == (1, *features_shape)


def test_torchvision_state_dict_names():
    with torch.device("meta"):
        sd = {k: tuple(v.shape) for k, v in M.create("vgg16_bn").state_dict().items()}
        assert sd["features.0.weight"] == (64, 3, 3, 3) and sd["features.1.running_var"] == (64,)
        assert sd["features.40.weight"] == (512, 512, 3, 3) and sd["classifier.6.weight"] == (1000, 4096)
        sd = {k: tuple(v.shape) for k, v in M.create("alexnet").state_dict().items()}
        assert sorted(sd) == sorted(f"{p}.{i}.{w}" for p, i in [("features", 0), ("features", 3),
                                                               ("features", 6), ("features", 8),
                                                               ("features", 10), ("classifier", 1),
                                                               ("classifier", 4), ("classifier", 6)]
                                    for w in ("weight", "bias"))
        assert sd["features.3.weight"] == (192, 64, 5, 5)
        sd = M.create("alexnet_v1").state_dict()
        assert sd["features.4.weight"].shape == (256, 48, 5, 5)  # grouped: each tower sees its 48 maps
        sd = M.create("densenet121").state_dict()
        for key in ("features.conv0.weight", "features.norm0.running_mean",
                    "features.denseblock1.denselayer1.norm1.weight", "features.denseblock1.denselayer6.conv2.weight",
                    "features.transition3.conv.weight", "features.norm5.bias", "classifier.weight"):
            assert key in sd, key
        assert sd["features.denseblock4.denselayer16.conv1.weight"].shape == (128, 992, 1, 1)
        sd = M.create("googlenet").state_dict()
        for key in ("conv1.conv.weight", "conv1.bn.running_var", "inception3a.branch1.conv.weight",
                    "inception4e.branch4.1.bn.bias", "aux1.conv.conv.weight", "aux2.fc2.weight", "fc.weight"):
            assert key in sd, key
        assert sd["inception5b.branch3.1.conv.weight"].shape == (128, 48, 3, 3)  # torchvision's 3x3
        sd = M.create("inception_v3").state_dict()
        for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.bn.weight",
                    "Mixed_6e.branch7x7dbl_5.conv.weight", "AuxLogits.conv1.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.running_mean", "fc.bias"):
            assert key in sd, key
        assert sd["Mixed_7b.branch3x3_2a.conv.weight"].shape == (384, 384, 1, 3)
        sd = M.create("squeezenet1_1").state_dict()
        assert sd["features.12.expand3x3.weight"].shape == (256, 64, 3, 3) and "classifier.1.weight" in sd
        sd = M.create("inception_resnet_v2").state_dict()
        assert sd["repeat_1.19.conv2d.weight"].shape == (1088, 384, 1, 1) and "block8.conv2d.bias" in sd
        assert "classif.weight" in sd and "mixed_7a.branch2.2.conv.weight" in sd
        assert "features.21.branch2_3b.conv.weight" in M.create("inception_v4").state_dict()


@pytest.mark.parametrize("name", ["alexnet_v1", "zfnet", "vgg11_lrn"])
def test_lrn_is_the_papers(name):
    """Krizhevsky et al. 2012, Sec. 3.3: b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta,
    k=2, n=5, alpha=1e-4, beta=0.75, the sum NOT divided by n. torch's (and fastcnn's)
    alpha is divided by the size, so the module holds 1e-4 * 5."""
    with torch.device("meta"):
        lrns = [m for m in M.create(name).modules() if isinstance(m, nn.LocalResponseNorm)]
    assert lrns and all((m.size, m.alpha, m.beta, m.k) == (5, 1e-4 * 5, 0.75, 2.0) for m in lrns)
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64) * 30  # large enough for alpha to matter
    sq = x * x
    window = torch.stack([sq[:, max(0, i - 2):i + 3].sum(1) for i in range(7)], 1)  # clipped at the edges
    paper = x / (2.0 + 1e-4 * window) ** 0.75
    lrn = fastcnn.nn.LocalResponseNorm(lrns[0].size, lrns[0].alpha, lrns[0].beta, lrns[0].k, algo="reference")
    assert torch.allclose(lrn(x), paper, rtol=1e-12)


# a training step through every model, at a small input (reference backend);
# Inception-v3's auxiliary classifier needs Mixed_6e's 17x17 output: 299x299 input
TRAIN_SIZE = {"lenet5": (1, 32, 32), "nin_cifar": (3, 32, 32), "fractalnet20": (3, 32, 32),
              "alexnet": (3, 64, 64), "alexnet_v1": (3, 67, 67), "zfnet": (3, 64, 64), "nin": (3, 64, 64),
              "squeezenet1_0": (3, 64, 64), "squeezenet1_1": (3, 64, 64), "googlenet": (3, 64, 64),
              "inception_v3": (3, 299, 299), "inception_v4": (3, 75, 75), "inception_resnet_v2": (3, 75, 75)}


@pytest.mark.parametrize("name", CLASSIC)
def test_forward_backward(name):
    model = build(name).train()
    x = torch.randn(2, *TRAIN_SIZE.get(name, (3, 32, 32)), device=DEVICE, requires_grad=True)
    out = model(x)
    if name in ("googlenet", "inception_v3"):  # auxiliary classifiers in training mode
        assert isinstance(out, tuple) and all(o.shape == (2, 1000) for o in out), name
        loss = out[0].logsumexp(1).sum() + sum(0.3 * o.logsumexp(1).sum() for o in out[1:])
    else:
        loss = out.logsumexp(1).sum()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    if name in ("googlenet", "inception_v3"):
        assert not missing, missing
    else:  # FractalNet's drop-path may skip columns; everything else is used
        assert not missing or name == "fractalnet20", missing


ZOO_VARIANTS = [(name, {}) for name in M.list_models()] + [("lenet5", {"activation": "relu"})]


@pytest.mark.parametrize("name, config", ZOO_VARIANTS, ids=[f"{n}{'-' if c else ''}{'-'.join(map(str, c.values()))}"
                                                            for n, c in ZOO_VARIANTS])
def test_convert_changes_no_module_of_any_zoo_model(name, config):
    """Every registered model (built on the meta device: no memory, no forward)."""
    with torch.device("meta"):
        model = M.create(name, **config)
    types = [(n, type(m)) for n, m in model.named_modules()]
    assert fastcnn.nn.convert(model) is model
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.parametrize("name, config", [(n, {}) for n in CLASSIC] + [("lenet5", {"activation": "relu"})],
                         ids=CLASSIC + ["lenet5-relu"])
def test_convert_changes_nothing(name, config):
    # (Inception-v3 without its aux classifier, which needs a 299x299 input, to save time)
    config, size = ({"aux_logits": False}, (3, 107, 107)) if name == "inception_v3" else (config, TRAIN_SIZE.get(name))
    model = build(name, **config)
    x = torch.randn(2, *(size or (3, 32, 32)), device=DEVICE)
    converted = fastcnn.nn.convert(copy.deepcopy(model), algo="reference")
    # no module swapped or fused, no forward rewritten: the zoo uses fastcnn's layers already
    assert [(n, type(m)) for n, m in converted.named_modules()] == [(n, type(m)) for n, m in model.named_modules()]
    assert not any("forward" in vars(m) for m in converted.modules())
    before = model.state_dict()
    after = converted.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for mode in ("train", "eval") if has_bn else ("eval",):  # training mode: running statistics too
        outs = []
        for m in (model, converted):
            getattr(m, mode)()
            torch.manual_seed(1)  # the same dropout masks and drop-paths
            random.seed(1)
            with torch.no_grad():
                out = m(x)
            outs.append(out[0] if isinstance(out, tuple) else out)
        assert_close(outs[1], outs[0].double(), factor=10, what=f"{name} {mode}")
    before, after = model.state_dict(), converted.state_dict()  # running statistics updated alike
    assert all(torch.allclose(before[k].float(), after[k].float(), rtol=1e-5, atol=1e-6) for k in before)


# ---------------------------------------------------------------- Triton kernels vs the reference backend

def _tiny_cases():
    """(name, module factory, input shape, also in training mode): tiny configurations
    of every block kind: plain/grouped conv + ReLU + LRN + pools (AlexNet, LeNet's tanh
    and average pool), fused conv-BN-ReLU in a torchvision Sequential (VGG-BN), mlpconv
    (NiN), Fire (SqueezeNet), pre-activation dense layers and transitions (DenseNet),
    GoogLeNet's Inception with 3x3 and 5x5 third branch, Inception-v3's A (5x5), B
    (3x3/2) and C (1x7/7x1) blocks, Inception-v4's stem Mixed3a and a multi-branch
    block, Inception-ResNet's scaled residual blocks with 1x3/3x1 convs, and fractal
    blocks. Inception-v3's D/E/Aux blocks have fixed widths of 320-768 channels that
    take minutes in the interpreter; their layer kinds all appear here."""
    def alex():
        return alexnet.AlexNet([(8, 5, 2, 2, 1, "LP"), (16, 3, 1, 1, 2, "P"), (16, 3, 1, 1, 2, "")],
                               num_classes=5, width=16)

    def vgg_bn():
        return vgg.VGG([8, "M", 16, "M"], batch_norm=True, width=16, num_classes=5)

    def nin_tiny():
        return nin.NiN([((8, 5, 1, 2), 8, 8, "max,drop"), ((16, 3, 1, 1), 8, None, "gap")], num_classes=5)

    def squeeze():
        return squeezenet.SqueezeNet([(16, 3, 2), "M", (4, 8, 8), (4, 8, 8)], num_classes=5)

    def dense():
        return densenet.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2,
                                 num_classes=5)

    def irv2_block():
        table = {"branch0": (8, 4, 1), "branch1": [(8, 4, 1), (4, 6, (1, 3), 1, (0, 1)), (6, 4, (3, 1), 1, (1, 0))]}
        return nn.Sequential(inception._ResidualInception(table, 8, 0.17),
                             inception._ResidualInception(table, 8, 0.2, relu=False))

    def v4_block():
        return inception._branches({"branch0": (8, 4, 3, 2), "branch1": [(8, 4, 1), inception._7x1(4, 4),
                                                                         (4, 4, 3, 2)],
                                    "branch2": "max"})

    def fractal():
        return fractalnet.FractalNet(num_columns=3, channels=(8, 16), dropout=(0.0, 0.1), num_classes=5)

    return [
        ("lenet5", lambda: M.create("lenet5", num_classes=10), (1, 1, 32, 32), False),
        ("alexnet_two_tower", alex, (1, 3, 32, 32), False),
        ("vgg_bn", vgg_bn, (2, 3, 16, 16), True),
        ("nin", nin_tiny, (1, 3, 16, 16), False),
        ("squeezenet", squeeze, (1, 3, 17, 17), False),
        ("densenet", dense, (2, 3, 16, 16), True),
        ("googlenet_inception", lambda: googlenet.Inception(8, 4, 4, 8, 2, 4, 4), (1, 8, 6, 6), False),
        ("googlenet_inception_5x5", lambda: googlenet.Inception(8, 4, 4, 8, 2, 4, 4, branch3_kernel=5),
         (1, 8, 6, 6), False),
        ("inception_v3_A", lambda: inception.InceptionA(8, 4), (1, 8, 5, 5), False),
        ("inception_v3_B", lambda: inception.InceptionB(8), (1, 8, 5, 5), False),
        ("inception_v3_C", lambda: inception.InceptionC(8, 4), (1, 8, 3, 3), False),
        ("inception_v4_stem_mixed3a", lambda: inception.Mixed3a(), (1, 64, 5, 5), False),
        ("inception_v4_block", v4_block, (1, 8, 7, 7), False),
        ("inception_resnet_block", irv2_block, (2, 8, 5, 5), True),
        ("fractalnet", fractal, (1, 3, 8, 8), False),
    ]


def _set_algo(model, algo):
    for m in model.modules():
        if isinstance(m, fastcnn.nn.Conv2d):
            m.algo = algo
    return model


@pytest.mark.parametrize("case", _tiny_cases(), ids=lambda c: c[0])
def test_triton_matches_reference(case):
    name, factory, shape, train = case
    model = factory().to(DEVICE)
    with torch.no_grad():  # non-trivial BatchNorm statistics for eval mode
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(shape, device=DEVICE)
    model.eval()
    with torch.no_grad():
        ref = _set_algo(model, "reference")(x)
        out = _set_algo(model, "triton")(x)
    assert_close(out, ref.double(), factor=20, what=f"{name} eval")
    if train:  # batch statistics, running-statistics updates and gradients through the fused kernels
        model.train()
        ref_model, tri_model = _set_algo(copy.deepcopy(model), "reference"), _set_algo(model, "triton")
        xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        torch.manual_seed(1)  # the same dropout masks
        ref = ref_model(xr)
        torch.manual_seed(1)
        out = tri_model(xt)
        assert_close(out, ref.detach().double(), factor=20, what=f"{name} train")
        ref.square().sum().backward()
        out.square().sum().backward()
        assert_close(xt.grad, xr.grad.double(), factor=50, what=f"{name} input grad")
        # a conv bias before a training-mode BatchNorm has a zero gradient up to rounding:
        # gradients are compared relative to their own size plus that of all gradients
        total = torch.cat([p.grad.flatten() for p in ref_model.parameters()]).norm()
        for (n, pr), (_, pt) in zip(ref_model.named_parameters(), tri_model.named_parameters()):
            err = (pt.grad - pr.grad).norm()
            assert err <= 5e-4 * pr.grad.norm() + 1e-5 * total, f"{name} grad {n}: {err:.3e}"
        sr, st = ref_model.state_dict(), tri_model.state_dict()
        for k in sr:
            if "running" in k:
                assert_close(st[k], sr[k].double(), factor=20, what=f"{name} {k}")


@pytest.mark.parametrize("name, fused", [("alexnet", 5), ("vgg11", 8), ("nin_cifar", 9)])
def test_conv_relu_pairs_run_as_one_op(name, fused, monkeypatch):
    """Conv2d -> ReLU without BatchNorm (AlexNet, VGG, NiN) is one conv2d call with the
    ReLU in its epilogue, not a convolution and a separate pass over its output."""
    import importlib
    conv_ops = importlib.import_module("fastcnn.ops.conv2d")  # the module: fastcnn.ops.conv2d is the function
    seen = []
    real = conv_ops.conv2d_op
    monkeypatch.setattr(conv_ops, "conv2d_op", lambda *a: seen.append(a[8]) or real(*a))
    model = M.create(name, num_classes=10, algo="reference").eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64) if name != "nin_cifar" else torch.randn(1, 3, 32, 32))
    assert seen.count("relu") == fused, seen
