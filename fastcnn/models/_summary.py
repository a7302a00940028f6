"""``fastcnn.models.summary``: the per-layer table of a model (output shape,
activations and their memory, parameters, FLOPs) and its totals.

Counting rules (all per image, i.e. divided by the batch size):

- A *layer* is a leaf module (no children), a fused fastcnn ConvBNAct (conv + BN +
  activation, one row) or a multi-head attention (its ``out_proj`` child is part of
  its row). Forward hooks record each call, so a layer called twice gives two rows.
  The model runs under ``fastcnn.nn.fused.unfused()``, so blocks that otherwise
  hand their Conv2d/BatchNorm2d children to one fused op (the zoo's,
  DepthwiseSeparableConv2d) call them as modules and every child is seen. Tensor
  functions called inside a module's forward (torch.cat, F.relu, the activation of
  a block's fused conv-BN-act) are not layers and have no rows.
- ``activations`` of a layer: the number of elements of its output.
- The total ``activations`` is the input image plus the outputs of every layer
  except element-wise activation functions (ReLU, Tanh...), Dropout, Identity and
  Flatten, which can run in place on the layer before them; that is the rule of
  CS231n's VGG-16 table (input, every conv, pool and FC output), whose entries sum
  to 15.24M (README, "Models"). ``activations_all`` counts every layer's output.
  ``activation_bytes`` = activations x the element size.
- ``params``: the parameters a layer owns; the total counts each model parameter once.
- ``macs``: the multiply-accumulates of convolutions, fully connected layers and
  attention (q, k, v and output projections plus the q k^T and p v matmuls);
  pooling, normalisation and activations are not counted. ``flops`` = 2 x macs.
"""
from dataclasses import dataclass

import torch
from torch import nn

from fastcnn.nn import ConvBNAct
from fastcnn.nn.fused import unfused

# modules that are one row although they have children
ONE_ROW_KINDS = (ConvBNAct, nn.MultiheadAttention)
IN_PLACE_KINDS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.GELU, nn.Hardswish,
                  nn.Hardsigmoid, nn.Dropout, nn.Identity, nn.Flatten)


@dataclass
class SummaryRow:
    name: str
    kind: str
    output_shape: tuple  # with the batch dimension
    activations: int  # output elements per image
    params: int
    macs: int  # per image
    counted: bool  # whether ``activations`` enters the total (see the module docstring)

    @property
    def flops(self):
        return 2 * self.macs


@dataclass
class Summary:
    rows: list
    input_size: tuple
    batch_size: int
    params: int
    trainable_params: int
    input_activations: int
    activations: int
    activations_all: int
    activation_bytes: int
    macs: int

    @property
    def flops(self):
        return 2 * self.macs

    def table(self):
        head = f"{'layer':<40} {'type':<18} {'output shape':<22} {'activations':>12} {'act. mem':>10} " \
               f"{'params':>12} {'FLOPs':>14}"
        lines = [head, "-" * len(head)]
        elsize = self.activation_bytes // max(self.activations, 1)
        lines.append(f"{'input':<40} {'':<18} {str((self.batch_size,) + tuple(self.input_size)):<22} "
                     f"{self.input_activations:>12,} {_mem(self.input_activations * elsize):>10} {'':>12} {'':>14}")
        for r in self.rows:
            act = f"{r.activations:,}" if r.counted else f"({r.activations:,})"
            lines.append(f"{r.name[:40]:<40} {r.kind[:18]:<18} {str(r.output_shape)[:22]:<22} {act:>12} "
                         f"{_mem(r.activations * elsize) if r.counted else '':>10} {r.params:>12,} {r.flops:>14,}")
        lines.append("-" * len(head))
        lines.append(f"Total params: {self.params:,}   Trainable: {self.trainable_params:,}")
        lines.append(f"Activations per image (input + layer outputs, in-place activations/dropout not counted): "
                     f"{self.activations:,} ({_mem(self.activation_bytes)});  all layer outputs: "
                     f"{self.activations_all:,}")
        lines.append(f"FLOPs per image (2 x MACs of conv/linear/attention layers): {self.flops:,} "
                     f"({self.flops / 1e9:.2f} GFLOPs, {self.macs / 1e9:.2f} GMACs)")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def _mem(nbytes):
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.1f}{unit}" if unit != "B" else f"{nbytes}B"
        nbytes /= 1024


def _macs(module, args, kwargs, out):
    """Multiply-accumulates of one call, over the whole batch."""
    conv = module.conv if isinstance(module, ConvBNAct) else module
    if isinstance(conv, nn.Conv2d):
        kh, kw = conv.kernel_size
        return out.numel() * (conv.in_channels // conv.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.MultiheadAttention):
        query, key = (args[i] if len(args) > i else kwargs[name] for i, name in enumerate(("query", "key")))
        e = module.embed_dim
        seq_dim = 1 if module.batch_first and query.dim() == 3 else 0
        lq, lk = query.shape[seq_dim], key.shape[seq_dim]
        sequences = query.numel() // (lq * e)
        projections = 2 * lq * e * e + lk * e * (module.kdim + module.vdim)  # q and out; k and v
        return sequences * (projections + 2 * lq * lk * e)  # + q k^T and p v
    return 0


def summary(name_or_model, input_size=(3, 224, 224), batch_size=1, *, print_table=True, dtype=None,
            device=None, **config):
    """Print (unless ``print_table=False``) and return the per-layer :class:`Summary`
    of a model: a registered name (built with ``fastcnn.models.create(name, algo=
    "reference", **config)``) or a module. The model runs one forward in eval mode
    under no_grad on a random ``(batch_size, *input_size)`` input of ``dtype`` on
    ``device`` (default: those of the model's parameters, else float32 on the CPU;
    a given ``device`` moves the model there). The model's training mode is restored."""
    if isinstance(name_or_model, str):
        from fastcnn.models._registry import create
        config.setdefault("algo", "reference")
        model = create(name_or_model, **config)
    else:
        model = name_or_model
    if device is not None:
        model = model.to(device)
    first = next(model.parameters(), None)
    device = device if device is not None else (first.device if first is not None else "cpu")
    dtype = dtype or (first.dtype if first is not None and first.is_floating_point() else torch.float32)
    batch = batch_size
    rows, handles = [], []
    inside = set()  # children of one-row modules
    for m in model.modules():
        if isinstance(m, ONE_ROW_KINDS):
            inside.update(id(c) for c in m.modules() if c is not m)
    for name, m in model.named_modules():
        if id(m) in inside or not (isinstance(m, ONE_ROW_KINDS) or next(m.children(), None) is None):
            continue

        def hook(mod, args, kwargs, out, name=name):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if not torch.is_tensor(out):
                return
            rows.append(SummaryRow(name, type(mod).__name__, tuple(out.shape), out.numel() // batch,
                                   sum(p.numel() for p in mod.parameters()), _macs(mod, args, kwargs, out) // batch,
                                   not isinstance(mod, IN_PLACE_KINDS)))
        handles.append(m.register_forward_hook(hook, with_kwargs=True))
    was_training = model.training
    try:
        model.eval()
        x = torch.randn((batch,) + tuple(input_size), dtype=dtype, device=device)
        with torch.no_grad(), unfused():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = {id(p): p for p in model.parameters()}
    n_in = x.numel() // batch
    counted = n_in + sum(r.activations for r in rows if r.counted)
    result = Summary(
        rows=rows, input_size=tuple(input_size), batch_size=batch,
        params=sum(p.numel() for p in params.values()),
        trainable_params=sum(p.numel() for p in params.values() if p.requires_grad),
        input_activations=n_in, activations=counted,
        activations_all=n_in + sum(r.activations for r in rows),
        activation_bytes=counted * x.element_size(), macs=sum(r.macs for r in rows))
    if print_table:
        print(result.table())
    return result
