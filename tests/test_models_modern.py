"""The modern half of the architecture zoo (ResNet family, Res2Net, MobileNet,
ShuffleNet, NASNet-A, EfficientNet, ConvNeXt): published parameter counts, output shapes,
forward + backward, fastcnn's Triton kernels (interpreter on CPU) against the
reference backend on tiny width-reduced configs covering every block kind, and
``fastcnn.nn.convert`` leaving every model unchanged."""
import math

import pytest
import torch

import fastcnn.models as M
import fastcnn.nn
from fastcnn.models import _registry
from fastcnn.nn import Conv2d
from helpers import DEVICE, assert_close, torchvision_models

MODULES = {f"fastcnn.models.{m}" for m in
           ("resnet", "res2net", "mobilenet", "shufflenet", "nasnet", "efficientnet", "convnext")}

TV = "torchvision documentation (weights tables), exact"
TIMM = "timm model card, exact"

# name: (parameter count, tolerance (0 = exact; else the paper's rounding: |count - n| <= tol), source)
PARAM_COUNTS = {
    "resnet18": (11_689_512, 0, TV),
    "resnet34": (21_797_672, 0, TV),
    "resnet50": (25_557_032, 0, TV),
    "resnet101": (44_549_160, 0, TV),
    "resnet152": (60_192_808, 0, TV),
    "wide_resnet50_2": (68_883_240, 0, TV),
    "wide_resnet101_2": (126_886_696, 0, TV),
    "resnext50_32x4d": (25_028_904, 0, TV),
    "resnext101_32x8d": (88_791_336, 0, TV),
    "resnext101_64x4d": (83_455_272, 0, TV),
    # Hu et al., "Squeeze-and-Excitation Networks": ~2.5M over ResNet-50's ~25M; exact
    # figures are timm's seresnet50 / seresnext50_32x4d (reduction 16)
    "seresnet50": (28_088_024, 0, TIMM),
    "seresnext50_32x4d": (27_559_896, 0, TIMM),
    # Gao et al., "Res2Net", Table 2 (25.70M / 25.29M / 25.06M) and timm (45.21M)
    "res2net50_26w_4s": (25_700_000, 5_000, "Res2Net paper, 25.70M"),
    "res2net50_48w_2s": (25_290_000, 5_000, "Res2Net paper, 25.29M"),
    "res2net50_14w_8s": (25_060_000, 5_000, "Res2Net paper, 25.06M"),
    "res2net101_26w_4s": (45_210_000, 5_000, "timm model card, 45.21M"),
    # He et al., "Identity Mappings in Deep Residual Networks", Table 3 (CIFAR-10):
    # ResNet-164 1.7M. ResNet-1001 is "10.2M": that is the count without BatchNorm's
    # affine parameters (10.18M; 10.33M with them), checked separately below.
    "preact_resnet164": (1_700_000, 50_000, "Identity Mappings paper, 1.7M (10 classes)"),
    # Zagoruyko & Komodakis, "Wide Residual Networks", Table 5: WRN-28-10 36.5M (CIFAR-10)
    "wide_resnet28_10": (36_479_194, 0, "WRN paper 36.5M; exact figure of the authors' code (10 classes)"),
    # Howard et al., "MobileNets", Tables 6/8: 4.2M, 2.6M, 1.3M, 0.5M
    "mobilenet_v1": (4_200_000, 50_000, "MobileNet paper, 4.2M"),
    "mobilenet_v1_075": (2_600_000, 50_000, "MobileNet paper, 2.6M"),
    "mobilenet_v1_050": (1_300_000, 50_000, "MobileNet paper, 1.3M"),
    "mobilenet_v1_025": (500_000, 50_000, "MobileNet paper, 0.5M"),
    "mobilenet_v2": (3_504_872, 0, TV),
    # Zhang et al., "ShuffleNet" as released by Megvii (ShuffleNet-Series README) and
    # MobileNetV2 paper Table 4 (ShuffleNet 1.5x 3.4M, 2x 5.4M)
    "shufflenet_v1_g3": (1_900_000, 50_000, "Megvii ShuffleNetV1 1.0x g=3, 1.9M"),
    "shufflenet_v1_g8": (2_400_000, 50_000, "Megvii ShuffleNetV1 1.0x g=8, 2.4M"),
    "shufflenet_v1_x0_5_g3": (700_000, 50_000, "Megvii ShuffleNetV1 0.5x g=3, 0.7M"),
    "shufflenet_v1_x1_5_g3": (3_400_000, 50_000, "MobileNetV2 paper Table 4 / Megvii, 3.4M"),
    "shufflenet_v1_x2_0_g3": (5_400_000, 50_000, "MobileNetV2 paper Table 4 / Megvii, 5.4M"),
    "shufflenet_v2_x0_5": (1_366_792, 0, TV),
    "shufflenet_v2_x1_0": (2_278_604, 0, TV),
    "shufflenet_v2_x1_5": (3_503_624, 0, TV),
    "shufflenet_v2_x2_0": (7_393_996, 0, TV),
    "efficientnet_b0": (5_288_548, 0, TV),
    "efficientnet_b1": (7_794_184, 0, TV),
    "efficientnet_b2": (9_109_994, 0, TV),
    "efficientnet_b3": (12_233_232, 0, TV),
    "efficientnet_b4": (19_341_616, 0, TV),
    "efficientnet_b5": (30_389_784, 0, TV),
    "efficientnet_b6": (43_040_704, 0, TV),
    "efficientnet_b7": (66_347_960, 0, TV),
    "convnext_tiny": (28_589_128, 0, TV),
    "convnext_small": (50_223_688, 0, TV),
    "convnext_base": (88_591_464, 0, TV),
    "preact_resnet1001": (10_200_000, 50_000, "Identity Mappings paper, 10.2M (see above)"),
    # Zoph et al., "Learning Transferable Architectures", Table 2: NASNet-A (4 @ 1056) 5.3M
    # (5,289,978 in Cadene's pretrainedmodels port, whose layout this follows)
    "nasnet_a_mobile": (5_300_000, 50_000, "NASNet paper, 5.3M"),
}

CIFAR = {"preact_resnet164", "preact_resnet1001", "wide_resnet28_10"}

# canonical input sizes for the small models (the others run at reduced sizes)
CANONICAL = {"resnet18": 224, "resnet50": 224, "mobilenet_v1": 224, "mobilenet_v2": 224,
             "shufflenet_v1_g3": 224, "shufflenet_v2_x1_0": 224, "efficientnet_b0": 224, "convnext_tiny": 224,
             "res2net50_26w_4s": 224, "preact_resnet164": 32, "wide_resnet28_10": 32}

# models with torchvision's parameter names and shapes
TORCHVISION = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2",
               "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "mobilenet_v2", "shufflenet_v2_x0_5",
               "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"] + \
              [f"efficientnet_b{i}" for i in range(8)] + ["convnext_tiny", "convnext_small", "convnext_base"]

# tiny width/depth-reduced configs covering every block kind, for the interpreter
TINY = {
    "resnet18": dict(widths=(8, 8, 16, 16), layers=(1, 1, 1, 1)),                          # BasicBlock
    "resnext50_32x4d": dict(widths=(8, 8, 16, 16), layers=(1, 1, 1, 1), groups=4, width_per_group=8),
    "seresnet50": dict(widths=(16, 16, 16, 16), layers=(1, 1, 1, 1)),                      # SE bottleneck
    "res2net50_26w_4s": dict(widths=(8, 8, 16, 16), layers=(1, 1, 1, 1), base_width=16),   # Bottle2neck
    "preact_resnet164": dict(widths=(4, 8, 8), depth_per_stage=1),                         # pre-act bottleneck
    "wide_resnet28_10": dict(widths=(8, 16, 16), depth_per_stage=1),                       # pre-act basic
    "mobilenet_v1": dict(width_mult=0.25, config=[(16, 1), (16, 2), (32, 2)]),             # dw-separable
    "mobilenet_v2": dict(width_mult=0.25, config=[(1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 1, 2)]),
    "shufflenet_v1_g3": dict(stage_repeats=(2, 1, 1), stage_channels=(24, 48, 96), stem_channels=12),
    "shufflenet_v2_x1_0": dict(stages_repeats=(2, 1, 1), stages_out_channels=(8, 16, 32, 32, 32)),
    "efficientnet_b0": dict(config=[(1, 3, 1, 16, 8, 1), (6, 5, 2, 8, 8, 2)]),            # MBConv (+SE, res)
    "convnext_tiny": dict(widths=(8, 16, 16, 16), depths=(2, 1, 1, 1)),                    # CNBlock
    "nasnet_a_mobile": dict(penultimate_filters=96, cells_per_stage=1, stem_filters=8),   # NASNet-A cells
}
TINY_SIZE = {"convnext_tiny": 32, "nasnet_a_mobile": 32}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Whole models are many small ops: on a shared 2-core machine, intra-op threads
    mostly wait for each other (runs several times slower and far less predictable)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mine():
    return sorted(n for n, fn in _registry._MODELS.items() if fn.__module__ in MODULES)


def _nparams(model):
    return sum(p.numel() for p in model.parameters())


def _num_classes(name):
    return 10 if name in CIFAR else 1000


def _small_input(name, n=2):
    return torch.randn(n, 3, 32, 32, device=DEVICE)


def _randomize_bn(model):
    """Non-trivial BatchNorm statistics and affine parameters, so eval-mode outputs
    are not dominated by a near-identity normalization."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _set_algo(model, algo):
    for m in model.modules():
        if isinstance(m, Conv2d):
            m.algo = algo
    return model


def test_registry_covers_the_table():
    mine = _mine()
    assert set(mine) == set(PARAM_COUNTS), (set(mine) ^ set(PARAM_COUNTS))
    assert set(M.list_models("resnet*")) >= {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    for name in mine:
        assert _registry._MODELS[name].__doc__, name
    with pytest.raises(ValueError, match="unknown model"):
        M.create("resnet19")


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_count(name):
    expected, tol, source = PARAM_COUNTS[name]
    with torch.device("meta"):
        model = M.create(name, num_classes=_num_classes(name))
    count = _nparams(model)
    if name == "preact_resnet1001":  # the paper's figure leaves out BatchNorm's affine parameters
        count -= sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
                     for p in m.parameters())
    assert abs(count - expected) <= tol, f"{name}: {count:,} parameters, expected {expected:,} ({source})"
    # every convolution is fastcnn's, never a bare torch.nn.Conv2d
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, Conv2d) for m in convs), name


def test_algo_reaches_every_module():
    model = M.create("efficientnet_b0", algo="reference", **TINY["efficientnet_b0"])
    assert {m.algo for m in model.modules() if isinstance(m, Conv2d)} == {"reference"}


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_output_shape_canonical(name):
    model = M.create(name, num_classes=_num_classes(name), algo="reference").eval()
    size = CANONICAL[name]
    with torch.no_grad():
        y = model(torch.randn(1, 3, size, size, device=DEVICE))
    assert y.shape == (1, _num_classes(name))


@pytest.mark.parametrize("name", sorted(TINY))
def test_triton_matches_reference(name):
    """The whole model through fastcnn's Triton kernels (interpreter on CPU) against
    the same model through the reference backend: eval (folded BN) and train (batch
    statistics) mode."""
    model = _randomize_bn(M.create(name, num_classes=10, algo="reference", **TINY[name]))
    size = TINY_SIZE.get(name, 16)
    x = torch.randn(2, 3, size, size, device=DEVICE)
    for mode in ("eval", "train"):
        getattr(model, mode)()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(3)
        with torch.no_grad():
            ref = _set_algo(model, "reference")(x)
        model.load_state_dict(state)
        torch.manual_seed(3)
        with torch.no_grad():
            out = _set_algo(model, "triton")(x)
        assert_close(out, ref, factor=100, what=f"{name} ({mode})")


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_model_forward_backward_and_convert(name):
    """Every model, built once (construction dominates the big ones' cost):

    1. eval mode at a reduced 32x32 input (the big models' output-shape test);
    2. ``fastcnn.nn.convert`` leaves it unchanged: module types, state_dict, outputs;
    3. a training-mode forward and backward step at 32x32 (algo="reference"): every
       parameter gets a finite gradient."""
    model = M.create(name, num_classes=7, algo="reference").eval()
    deep = name == "preact_resnet1001"  # 333 blocks, no BN after the adds: eval outputs overflow
    if not deep:
        _randomize_bn(model)
    x = torch.randn(1, 3, 32, 32, device=DEVICE)
    if not deep:
        with torch.no_grad():
            before = model(x)
        assert before.shape == (1, 7) and torch.isfinite(before).all()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types_before = [(n, type(m)) for n, m in model.named_modules()]
    fastcnn.nn.convert(model, algo="reference")
    assert [(n, type(m)) for n, m in model.named_modules()] == types_before
    assert not any("forward" in vars(m) for m in model.modules())  # no forward rewritten
    after_state = model.state_dict()
    assert list(after_state) == list(state)
    assert all(torch.equal(after_state[k], v) for k, v in state.items())
    if not deep:
        with torch.no_grad():
            assert torch.equal(model(x), before)

    model.train()
    x = torch.randn(2, 3, 32, 32, device=DEVICE, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 7)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {pname}"


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d", "mobilenet_v2", "shufflenet_v2_x1_0",
                                  "efficientnet_b0", "convnext_tiny"])
def test_torchvision_state_dict_round_trip(name):
    tvm = torchvision_models()
    ref = _randomize_bn(getattr(tvm, name)()).eval()
    model = M.create(name, algo="reference").eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close(model(x), ref(x), factor=10, what=name)


def test_torchvision_names_for_every_compatible_model():
    """Parameter names and shapes of the torchvision-compatible models equal
    torchvision's (checked on meta tensors, so the big ones cost nothing)."""
    tvm = torchvision_models()
    for name in TORCHVISION:
        with torch.device("meta"):
            ref = {k: v.shape for k, v in getattr(tvm, name)().state_dict().items()}
            ours = {k: v.shape for k, v in M.create(name).state_dict().items()}
        assert ours == ref, name


def test_cifar_models_at_32():
    model = M.create("wide_resnet28_10", num_classes=100, algo="reference", dropout=0.3).eval()
    assert math.isclose(_nparams(model) / 1e6, 36.5, abs_tol=0.1)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
