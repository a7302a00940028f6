"""``fastcnn.models.summary``: the per-layer table, its totals against published
numbers (torchvision's GFLOPS, which are multiply-accumulates, and CS231n's VGG-16
table), the unfused run that lets it see the layers of fused zoo blocks, and
multi-head attention."""
import pytest
import torch
from torch import nn

import fastcnn.models as M
import fastcnn.nn as fnn
from fastcnn.nn.fused import is_unfused, unfused


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small convolutions: on the shared 2-core machines one thread is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_vgg16_table(capsys):
    s = M.summary("vgg16", (3, 224, 224))
    printed = capsys.readouterr().out
    assert "138,357,544" in printed and "features.28" in printed and "classifier.6" in printed
    assert s.params == 138_357_544
    # CS231n's VGG-16 table ("memory" column): the input, every conv, every pool and
    # every FC output, no ReLU rows:
    #   input 224*224*3                           150,528
    #   2 conv 224*224*64, pool 112*112*64        6,422,528 + 802,816
    #   2 conv 112*112*128, pool 56*56*128        3,211,264 + 401,408
    #   3 conv 56*56*256, pool 28*28*256          2,408,448 + 200,704
    #   3 conv 28*28*512, pool 14*14*512          1,204,224 + 100,352
    #   3 conv 14*14*512, pool 7*7*512              301,056 + 25,088
    #   FC 4096 + 4096 + 1000                         9,192
    #   sum                                      15,237,608
    # The table's "TOTAL memory: 24M" line is not the sum of its entries; no rule over
    # its rows gives 24M (adding every ReLU output as well gives 28.8M, below).
    cs231n = (150_528 + 6_422_528 + 802_816 + 3_211_264 + 401_408 + 2_408_448 + 200_704 + 1_204_224
              + 100_352 + 301_056 + 25_088 + 9_192)
    assert cs231n == 15_237_608
    # ours: the same rows + torchvision's AdaptiveAvgPool2d(7) output (7*7*512), a layer
    # the paper's network does not have
    assert s.activations == cs231n + 25_088 == 15_262_696
    assert s.activation_bytes == 4 * s.activations
    # every layer's output: + the 13 conv ReLUs, 2 FC ReLUs (Identity) and 2 Dropouts
    conv_outputs = 6_422_528 + 3_211_264 + 2_408_448 + 1_204_224 + 301_056
    assert s.activations_all == s.activations + conv_outputs + 4 * 4096 == 28_826_600
    assert s.macs == 15_470_264_320 and s.flops == 2 * s.macs  # torchvision: 15.47 GFLOPS (MACs)
    convs = [r for r in s.rows if r.kind == "Conv2d"]
    assert len(convs) == 13 and convs[0].output_shape == (1, 64, 224, 224) and convs[0].params == 1792
    assert convs[0].macs == 224 * 224 * 64 * 27


# name, config, input size, published GMACs, source (torchvision's weights tables list
# "GFLOPS" that are multiply-accumulates: its vgg16 15.47 is the exact 15.470 G above)
PUBLISHED = [
    ("resnet50", {}, 224, 4.09, "torchvision"),
    ("vit_b_16", {}, 224, 17.56, "torchvision"),
    ("densenet121", {}, 224, 2.83, "torchvision"),
    ("mobilenet_v2", {}, 224, 0.30, "torchvision"),
    ("alexnet", {}, 224, 0.71, "torchvision"),
    ("googlenet", {"aux_logits": False}, 224, 1.50, "torchvision"),
    ("shufflenet_v2_x1_0", {}, 224, 0.14, "torchvision"),
    ("mobilenet_v1", {}, 224, 0.569, "Howard et al. 2017, Table 8: 569M mult-adds"),
    ("nasnet_a_mobile", {}, 224, 0.564, "Zoph et al. 2018, Table 2: 564M mult-adds"),
]


@pytest.mark.parametrize("name, config, size, gmacs, source", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_macs(name, config, size, gmacs, source):
    s = M.summary(name, (3, size, size), print_table=False, **config)
    # 1%, or the last published digit (mobilenet_v2's 0.30 is 0.3008, shufflenet's 0.14 is 0.1449)
    assert s.macs / 1e9 == pytest.approx(gmacs, rel=0.01, abs=0.005), f"{name} ({source})"


def test_resnet50_rows_and_exact_macs():
    """The blocks' convs and BNs run through fused ops; the summary sees each one."""
    s = M.summary("resnet50", (3, 224, 224), print_table=False)
    assert sum(r.kind == "Conv2d" for r in s.rows) == 53 == sum(r.kind == "BatchNorm2d" for r in s.rows)
    # stem 118,013,952; the 16 blocks' 1x1/3x3/1x1 convs and 4 downsamples; fc 2,048,000
    assert s.macs == 4_089_184_256


def test_summary_restores_the_model():
    model = M.create("densenet121", algo="reference")
    s = M.summary(model, (3, 64, 64), batch_size=2, print_table=False)
    assert s.params == 7_978_856
    assert {"Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "AvgPool2d", "Linear"} <= {r.kind for r in s.rows}
    assert sum(r.kind == "Conv2d" for r in s.rows) == 120  # 1 + 2 x 58 + 3 transitions
    assert model.training and not is_unfused()
    v1 = M.create("mobilenet_v1", algo="reference").eval()
    assert M.summary(v1, (3, 32, 32), print_table=False).macs > 0
    assert not v1.training and not is_unfused()
    s = M.summary("googlenet", (3, 224, 224), print_table=False, aux_logits=False)
    assert {"ConvBNAct", "MaxPool2d", "Linear"} <= {r.kind for r in s.rows}  # fastcnn ConvBNAct: one row


@pytest.mark.parametrize("name", ["resnet18", "seresnet50", "res2net50_26w_4s", "densenet121", "mobilenet_v2",
                                  "shufflenet_v1_g3", "nasnet_a_mobile", "vgg11_bn"])
def test_unfused_blocks_compute_the_same(name):
    """unfused() runs the same math module by module (residual before the activation)."""
    torch.manual_seed(0)
    model = M.create(name, num_classes=10, algo="reference")
    for m in model.modules():  # non-trivial BN statistics, so that a misplaced BN would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    size = 64 if name == "nasnet_a_mobile" else 32  # NASNet's reductions need more than 32
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        fused_out = model(x)
        with unfused():
            unfused_out = model(x)
    assert torch.allclose(fused_out, unfused_out, rtol=1e-4, atol=1e-5 * fused_out.abs().max().item())


class _Attend(nn.Module):
    def __init__(self, attn, need_weights):
        super().__init__()
        self.attn, self.need_weights = attn, need_weights

    def forward(self, q, kv=None):
        kv = q if kv is None else kv
        return self.attn(q, kv, kv, need_weights=self.need_weights)[0]


@pytest.mark.parametrize("attn, need_weights", [
    (nn.MultiheadAttention(8, 2, batch_first=True), True),  # torch's forward: in/out projections functional
    (fnn.MultiheadSelfAttention(8, 2, batch_first=True, algo="reference"), False),  # fused: out_proj a module call
    (nn.MultiheadAttention(8, 2), False),  # (tokens, batch, e)
], ids=["torch", "fastcnn", "seq_first"])
def test_attention_row(attn, need_weights):
    b, length, e = 3, 5, 8
    model = _Attend(attn, need_weights).eval()
    # summary's batch is the input's first dimension: (L, B, E) inputs count per token
    shape, batch = ((length, e), b) if attn.batch_first else ((b, e), length)
    s = M.summary(model, shape, batch, print_table=False)
    (row,) = s.rows  # out_proj is inside the attention row, not a row of its own
    # per sequence: q, k, v and output projections; q k^T and p v
    assert row.macs * batch == s.macs * batch == b * (4 * length * e * e + 2 * length * length * e)
    assert row.params == 4 * e * e + 4 * e


def test_vit_macs_exact():
    cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=24)
    s = M.summary("vit_b_16", (3, 32, 32), print_table=False, num_classes=10, **cfg)
    t, e, mlp = 4 * 4 + 1, 16, 24  # 16 patches + the class token
    attention = 4 * t * e * e + 2 * t * t * e
    assert [r.macs for r in s.rows if r.kind == "MultiheadSelfAttention"] == [attention] * 2
    assert not any(r.name.endswith("out_proj") for r in s.rows)
    assert s.macs == 16 * e * 3 * 8 * 8 + 2 * (attention + 2 * t * e * mlp) + e * 10  # patches, blocks, head


def test_cross_attention_with_kdim_vdim():
    b, lq, lk, e, kdim, vdim = 2, 4, 7, 8, 6, 10
    attn = nn.MultiheadAttention(e, 2, kdim=kdim, vdim=vdim, batch_first=True)

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, q):
            k = torch.randn(q.shape[0], lk, kdim)
            v = torch.randn(q.shape[0], lk, vdim)
            return self.attn(q, k, v)[0]
    s = M.summary(Cross(), (lq, e), b, print_table=False)
    assert s.macs == 2 * lq * e * e + lk * e * (kdim + vdim) + 2 * lq * lk * e


def test_real_input_gives_count_flops():
    """What fastcnn.bench.suites.count_flops(model, x) counts, from a real input's
    shape, dtype and device: 2 * summary(...).macs * batch."""
    from fastcnn.bench.suites import count_flops
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 6 * 6, 10)).to(torch.bfloat16).eval()
    x = torch.randn(2, 3, 6, 6, dtype=torch.bfloat16)
    s = M.summary(model, x.shape[1:], x.shape[0], dtype=x.dtype, device=x.device, print_table=False)
    assert 2 * s.macs * x.shape[0] == count_flops(model, x) == 2 * (2 * 8 * 36 * 27 + 2 * 10 * 288)
    assert s.activation_bytes == 2 * s.activations  # bf16
    # dtype and device default to the model's
    assert M.summary(model, (3, 6, 6), print_table=False).activation_bytes == s.activation_bytes


def test_summary_on_meta_tensors():
    """Shapes only, no memory: the fastcnn ops take meta tensors (their fake kernels
    run), so a model's table needs no real forward."""
    s = M.summary("vit_b_16", (3, 224, 224), device="meta", print_table=False)
    assert s.macs == 17_563_828_224 and s.params == 86_567_656
