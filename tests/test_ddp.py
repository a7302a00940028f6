"""A converted model (a small CNN; a pre-norm transformer block) trains under
DistributedDataParallel: two CPU processes (gloo, file rendezvous), each on half of
a batch; the synchronized gradients equal the single-process gradient of the whole
batch, and the ranks stay in step."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastcnn.nn as fnn
from helpers import assert_close


class _TransformerBlock(torch.nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.attn = torch.nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(), torch.nn.Linear(2 * dim, dim))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _model(kind):
    torch.manual_seed(0)
    if kind == "transformer":
        return _TransformerBlock()
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1), torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 4))


INPUTS = {"cnn": (4, 3, 8, 8), "transformer": (4, 7, 16)}


def _worker(rank, world, init_file, kind, batch, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(fnn.convert(_model(kind)))
    half = batch[rank * 2:(rank + 1) * 2]
    model(half).square().mean().backward()
    grads = {n: p.grad for n, p in model.module.named_parameters()}
    if rank == 0:
        torch.save(grads, result_file)
    # Both ranks leave together: a rank that tore gloo down while the other was still
    # busy sometimes aborted ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", list(INPUTS))
def test_ddp_gradients_match_single_process(tmp_path, kind):
    batch = torch.randn(INPUTS[kind])
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), kind, batch, str(tmp_path / "grads.pt")), nprocs=2)
    ddp_grads = torch.load(tmp_path / "grads.pt")
    # BatchNorm statistics are per rank under plain DDP, so the reference runs the
    # two halves separately and averages, as DDP's all-reduce does.
    reference = _model(kind).double()
    for half in (batch[:2], batch[2:]):
        reference(half.double()).square().mean().div(2).backward()
    for name, p in reference.named_parameters():
        assert_close(ddp_grads[name], p.grad, torch.float32, factor=10, what=name)
