"""``fastcnn.models.summary``: the per-layer table of a model (output shape,
activations and their memory, parameters, FLOPs) and its totals.

Counting rules (all per image, i.e. divided by the batch size):

- A *layer* is a leaf module (no children) or a fused fastcnn ConvBNAct (conv + BN +
  activation, one row). Forward hooks record each call, so a layer called twice gives
  two rows. Modules whose forward fuses Conv2d -> BatchNorm2d -> ReLU children into one
  op (``fuse_conv_bn``) are run unfused for the summary so that every child is seen.
  Tensor functions called inside a module's forward (torch.cat, F.relu...) are not
  layers and have no rows.
- ``activations`` of a layer: the number of elements of its output.
- The total ``activations`` follows the course notes' VGG-16 table: the input image
  plus the outputs of every layer except element-wise activation functions
  (ReLU, Tanh...), Dropout, Identity and Flatten, which the notes fold into the layer
  before them (their outputs can be computed in place). ``activations_all`` counts
  every layer's output. ``activation_bytes`` = activations x the element size.
- ``params``: the parameters a layer owns; the total counts each model parameter once.
- ``flops``: 2 x the multiply-accumulates of convolutions and fully connected layers
  (``macs``); pooling, normalisation and activations are not counted.
"""
from dataclasses import dataclass

import torch
from torch import nn

from fastcnn.nn import ConvBNAct

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
        lines.append(f"FLOPs per image (2 x MACs of conv/linear layers): {self.flops:,} "
                     f"({self.flops / 1e9:.2f} GFLOPs, {self.macs / 1e9:.2f} GMACs)")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def _mem(nbytes):
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.1f}{unit}" if unit != "B" else f"{nbytes}B"
        nbytes /= 1024


def _macs(module, inp, out, batch):
    conv = module.conv if isinstance(module, ConvBNAct) else module
    if isinstance(conv, nn.Conv2d):
        kh, kw = conv.kernel_size
        return out.numel() // batch * (conv.in_channels // conv.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() // batch * module.in_features
    return 0


def summary(name_or_model, input_size=(3, 224, 224), batch_size=1, *, print_table=True, dtype=torch.float32,
            device="cpu", **config):
    """Print (unless ``print_table=False``) and return the per-layer :class:`Summary`
    of a model: a registered name (built with ``fastcnn.models.create(name, algo=
    "reference", **config)``) or a module. The model runs one forward in eval mode
    under no_grad on a ``(batch_size, *input_size)`` input."""
    if isinstance(name_or_model, str):
        from fastcnn.models._registry import create
        config.setdefault("algo", "reference")
        model = create(name_or_model, **config)
    else:
        model = name_or_model
    model = model.to(device)
    batch = batch_size
    rows, handles, unfused = [], [], []
    names = {}
    skip = set()
    for name, m in model.named_modules():
        if isinstance(m, ConvBNAct):
            skip.update(id(c) for c in m.modules() if c is not m)
    for name, m in model.named_modules():
        if getattr(m, "fuse_conv_bn", False):
            m.fuse_conv_bn = False
            unfused.append(m)
        if id(m) in skip or not (isinstance(m, ConvBNAct) or not any(True for _ in m.children())):
            continue
        names[id(m)] = name

        def hook(mod, inp, out, name=name):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if not torch.is_tensor(out):
                return
            rows.append(SummaryRow(name, type(mod).__name__, tuple(out.shape), out.numel() // batch,
                                   sum(p.numel() for p in mod.parameters()), _macs(mod, inp, out, batch),
                                   not isinstance(mod, IN_PLACE_KINDS)))
        handles.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        x = torch.randn((batch,) + tuple(input_size), dtype=dtype, device=device)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m in unfused:
            m.fuse_conv_bn = True
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
