"""The transformer family of the zoo (ViT-B/16, B/32, L/16, L/32, H/14, MLP-Mixer
B/16 and L/16): published parameter counts, torchvision's / timm's parameter names,
and on tiny configurations the forward and backward of fastcnn's kernels (Triton
under the interpreter on CPU) against a plain-PyTorch statement of each
architecture (torch.nn.functional on the same parameters)."""
import pytest
import torch
import torch.nn.functional as F

import fastcnn.models as M
from fastcnn.bench.suites import set_algo
from helpers import DEVICE, assert_close, torchvision_models

PARAM_COUNTS = {
    # torchvision documentation (weights tables; vit_h_14 at 224x224, as its SWAG_LINEAR weights)
    "vit_b_16": 86_567_656,
    "vit_b_32": 88_224_232,
    "vit_l_16": 304_326_632,
    "vit_l_32": 306_535_400,
    "vit_h_14": 632_045_800,
    # timm mixer_b16_224 / mixer_l16_224 (Mixer paper Table 1: 59M, 207M)
    "mixer_b16": 59_880_472,
    "mixer_l16": 208_196_168,
}

TINY_VIT = dict(image_size=16, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
TINY_MIXER = dict(image_size=16, patch_size=4, num_blocks=2, dim=32, tokens_hidden=8, channels_hidden=64)


@pytest.mark.parametrize("name", PARAM_COUNTS)
def test_published_parameter_counts(name):
    with torch.device("meta"):  # no memory for 632M parameters
        model = M.create(name)
    assert sum(p.numel() for p in model.parameters()) == PARAM_COUNTS[name]


def test_torchvision_and_timm_parameter_names():
    with torch.device("meta"):
        vit, mixer = M.create("vit_b_16"), M.create("mixer_b16")
    keys = vit.state_dict().keys()
    for key in ("conv_proj.weight", "class_token", "encoder.pos_embedding",
                "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
                "encoder.layers.encoder_layer_0.self_attention.out_proj.bias",
                "encoder.layers.encoder_layer_11.mlp.0.weight", "encoder.layers.encoder_layer_11.mlp.3.bias",
                "encoder.layers.encoder_layer_0.ln_2.weight", "encoder.ln.bias", "heads.head.weight"):
        assert key in keys, key
    assert vit.state_dict()["encoder.pos_embedding"].shape == (1, 197, 768)
    for key in ("stem.proj.weight", "blocks.0.norm1.weight", "blocks.0.mlp_tokens.fc1.weight",
                "blocks.11.mlp_channels.fc2.bias", "norm.weight", "head.weight"):
        assert key in mixer.state_dict(), key
    assert mixer.state_dict()["blocks.0.mlp_tokens.fc1.weight"].shape == (384, 196)


def test_torchvision_state_dict_loads_strictly():
    tv = torchvision_models().vit_b_32()
    ours = M.create("vit_b_32").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    set_algo(ours, "reference")
    with torch.no_grad():
        assert_close(ours(x), tv.eval()(x).double(), factor=10)


def vit_plain(model, x):
    """torchvision's ViT, stated with torch.nn.functional on ``model``'s parameters."""
    p = dict(model.named_parameters())
    e = model.hidden_dim
    x = F.conv2d(x, p["conv_proj.weight"], p["conv_proj.bias"], model.patch_size).flatten(2).transpose(1, 2)
    x = torch.cat([p["class_token"].expand(x.shape[0], -1, -1), x], 1) + p["encoder.pos_embedding"]
    for i in range(len(model.encoder.layers)):
        pre = f"encoder.layers.encoder_layer_{i}."
        ln = lambda t, n: F.layer_norm(t, (e,), p[pre + n + ".weight"], p[pre + n + ".bias"], 1e-6)  # noqa: E731
        y = ln(x, "ln_1").transpose(0, 1)
        attn = model.encoder.layers[i].self_attention
        y, _ = F.multi_head_attention_forward(
            y, y, y, e, attn.num_heads, p[pre + "self_attention.in_proj_weight"],
            p[pre + "self_attention.in_proj_bias"], None, None, False, 0.0,
            p[pre + "self_attention.out_proj.weight"], p[pre + "self_attention.out_proj.bias"], need_weights=False)
        x = x + y.transpose(0, 1)
        y = F.gelu(F.linear(ln(x, "ln_2"), p[pre + "mlp.0.weight"], p[pre + "mlp.0.bias"]))
        x = x + F.linear(y, p[pre + "mlp.3.weight"], p[pre + "mlp.3.bias"])
    x = F.layer_norm(x, (e,), p["encoder.ln.weight"], p["encoder.ln.bias"], 1e-6)
    return F.linear(x[:, 0], p["heads.head.weight"], p["heads.head.bias"])


def mixer_plain(model, x):
    """timm's MLP-Mixer, stated with torch.nn.functional on ``model``'s parameters."""
    p = dict(model.named_parameters())
    dim = p["norm.weight"].shape[0]
    mlp = lambda t, n: F.linear(F.gelu(F.linear(t, p[n + ".fc1.weight"], p[n + ".fc1.bias"])),  # noqa: E731
                                p[n + ".fc2.weight"], p[n + ".fc2.bias"])
    ln = lambda t, n: F.layer_norm(t, (dim,), p[n + ".weight"], p[n + ".bias"], 1e-6)  # noqa: E731
    x = F.conv2d(x, p["stem.proj.weight"], p["stem.proj.bias"], model.stem.proj.stride).flatten(2).transpose(1, 2)
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        x = x + mlp(ln(x, b + "norm1").transpose(1, 2), b + "mlp_tokens").transpose(1, 2)
        x = x + mlp(ln(x, b + "norm2"), b + "mlp_channels")
    return F.linear(ln(x, "norm").mean(1), p["head.weight"], p["head.bias"])


@pytest.mark.parametrize("name, config, plain", [
    ("vit_b_16", TINY_VIT, vit_plain),
    ("mixer_b16", TINY_MIXER, mixer_plain),
], ids=["vit", "mixer"])
def test_tiny_model_matches_its_plain_pytorch_statement(name, config, plain):
    model = M.create(name, num_classes=10, **config).to(DEVICE).double()
    for m in model.modules():  # non-zero head and biases, so every path shows in the output
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.bias, std=0.5)
            torch.nn.init.normal_(m.weight, std=0.3)
    x = torch.randn(2, 3, 16, 16, device=DEVICE, dtype=torch.float64)
    ref = plain(model, x)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(model.parameters()))
    for algo in ("triton", "reference"):
        set_algo(model, algo)
        out = model(x)
        assert out.shape == (2, 10)
        assert_close(out, ref, what=f"{algo} output")
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        for (pname, _), g, r in zip(model.named_parameters(), grads, ref_grads):
            if r.norm() < 1e-9:  # exactly 0 in exact arithmetic, e.g. a bias a LayerNorm removes
                assert g.norm() < 1e-9, f"{algo} d{pname}"
            else:
                assert_close(g, r, what=f"{algo} d{pname}")


@pytest.mark.parametrize("name, config", [("vit_b_16", TINY_VIT), ("mixer_b16", TINY_MIXER)], ids=["vit", "mixer"])
def test_convert_changes_nothing(name, config):
    """The zoo is built from fastcnn's layers already: nothing to swap or fuse."""
    import fastcnn.nn
    model = M.create(name, num_classes=10, **config)
    types = [(n, type(m)) for n, m in model.named_modules()]
    fastcnn.nn.convert(model)
    assert [(n, type(m)) for n, m in model.named_modules()] == types
    assert not any("forward" in vars(m) for m in model.modules())


@pytest.mark.parametrize("name, config", [("vit_b_16", dict(TINY_VIT, num_layers=1)),
                                          ("mixer_b16", dict(TINY_MIXER, num_blocks=1))], ids=["vit", "mixer"])
def test_torch_compile_fullgraph(name, config):
    """The whole model compiles into one graph (fused attention, LayerNorm, bias+GELU
    and conv ops included) and trains like the eager model."""
    model = M.create(name, num_classes=10, **config).to(DEVICE)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out, ref = compiled(x), model(x)
    assert_close(out, ref.double())
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(out.square().sum(), params), torch.autograd.grad(ref.square().sum(), params)):
        assert_close(a, b.double())


def test_vit_rejects_other_image_sizes():
    model = M.create("vit_b_16", num_classes=10, **TINY_VIT)
    with pytest.raises(ValueError, match="expected 16x16"):
        model(torch.randn(1, 3, 32, 32))


def test_vit_attention_dropout_compiles_fullgraph_and_replays_eager():
    """Attention dropout draws its seed on the device inside the graph (no host int):
    a ViT with attention_dropout compiles into one graph, and under the same
    torch.manual_seed it drops exactly what the eager model drops, forward and backward."""
    model = M.create("vit_b_16", num_classes=10, **dict(TINY_VIT, num_layers=1), attention_dropout=0.5).to(DEVICE)
    for m in model.modules():  # a non-zero head, so the attention shows in the output
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.3)
    model.train()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.manual_seed(0)
    out = compiled(x)
    torch.manual_seed(0)
    ref = model(x)
    assert_close(out, ref.double())
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(out.square().sum(), params), torch.autograd.grad(ref.square().sum(), params)):
        assert_close(a, b.double())
    model.eval()  # and the dropout is real: without it the output differs
    assert not torch.allclose(model(x), ref)
