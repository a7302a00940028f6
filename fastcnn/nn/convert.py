"""fastcnn.nn.convert(model): put fastcnn's modules into an existing torch model.

1. Every torch.nn.Conv2d, LocalResponseNorm, LayerNorm and MultiheadAttention
   becomes its fastcnn.nn twin sharing its parameters (see SWAPS).
2. Conv2d -> BatchNorm2d [-> + residual] [-> activation] chains are fused into one
   fastcnn op, Conv2d -> activation pairs into Conv2d(activation=...), and Linear ->
   activation (GELU, ReLU, ReLU6, SiLU) into fastcnn.nn.Linear(activation=...).
   Fusion follows dataflow, not attribute order: each module's forward is traced
   with torch.fx (its children kept as leaves), and
   a chain is fused only when every intermediate value has a single user and each
   module of it is called once. The module then runs the rewritten graph (its class, attributes
   and state_dict keys stay as they were). A module that cannot be traced keeps its
   forward; its children are still converted. torch.nn.TransformerEncoderLayer, whose
   forward does not trace, has its feed-forward fused by hand (_fuse_encoder_layer).

A model that is itself one of the SWAPS types is replaced, not changed: use the
returned module. Hooks: a swapped module's twin carries its hooks (the same hook
dictionaries); a module with forward pre-hooks is not swapped, since those may
rewrite its parameters (weight_norm, spectral_norm and pruning do), and a chain
with a hooked module in it is not fused (its hooks would never run).
"""
import operator
import warnings

import torch
import torch.fx
import torch.nn.functional as F

from fastcnn.nn.attention import MultiheadSelfAttention
from fastcnn.nn.conv import Conv2d
from fastcnn.nn.fused import ConvBNAct, FusedConv2dBN
from fastcnn.nn.layernorm import LayerNorm
from fastcnn.nn.linear import Linear
from fastcnn.nn.lrn import LocalResponseNorm
from fastcnn.triton_kernels._common import ACTIVATIONS

ACT_MODULES = {torch.nn.ReLU: "relu", torch.nn.ReLU6: "relu6", torch.nn.SiLU: "silu"}
ACT_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu",
                 torch.nn.functional.gelu: "gelu"}
ACT_METHODS = {"relu": "relu", "relu_": "relu"}
ADD_FUNCTIONS = (operator.add, torch.add, operator.iadd)
FASTCNN_MODULES = (Conv2d, ConvBNAct)
# torch.nn type -> its fastcnn twin (a from_torch(module, algo=) builder sharing state)
SWAPS = {torch.nn.Conv2d: Conv2d, torch.nn.LocalResponseNorm: LocalResponseNorm,
         torch.nn.MultiheadAttention: MultiheadSelfAttention, torch.nn.LayerNorm: LayerNorm}


# every hook dictionary (and flag) of a module, carried over to its twin
HOOK_ATTRIBUTES = tuple(k for k in vars(torch.nn.Module()) if "hook" in k)
_CALL_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hooked(module) -> bool:
    """Whether calling ``module`` runs hooks (which fusing it away would skip)."""
    return any(getattr(module, name, None) for name in _CALL_HOOKS)


def _hooked_node(node, modules) -> bool:
    """Whether an fx node is a call of a hooked module (a function call has no hooks)."""
    return node.op == "call_module" and _hooked(modules[node.target])


class _ChildrenAsLeaves(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return True


def convert(model: torch.nn.Module, fuse: bool = True, algo: str = "auto") -> torch.nn.Module:
    """Convert ``model`` in place and return it (or its twin, where ``model`` itself
    is a SWAPS type). ``algo`` is given to every fastcnn module; ``fuse=False`` only
    swaps modules."""
    model = _swapped(model, algo)
    if fuse:
        for module in list(model.modules()):
            if type(module) is torch.nn.TransformerEncoderLayer:
                _fuse_encoder_layer(module, algo)
            elif module.__class__ not in FASTCNN_MODULES and not isinstance(module, FusedConv2dBN):
                _fuse_children(module, algo)
    return model


def _swapped(module, algo):
    """``module``'s fastcnn twin (sharing its parameters), or ``module`` itself with
    its descendants swapped."""
    if type(module) in SWAPS:
        if module._forward_pre_hooks:
            warnings.warn(f"fastcnn.nn.convert: a {type(module).__name__} with forward pre-hooks (weight_norm, "
                          f"spectral_norm, pruning...) is left as it is: they may rewrite its parameters",
                          stacklevel=3)
            return module
        twin = SWAPS[type(module)].from_torch(module, algo=algo)
        for name in HOOK_ATTRIBUTES:
            twin.__dict__[name] = module.__dict__[name]
        return twin
    if isinstance(module, tuple(SWAPS.values())):
        module.algo = algo
        return module
    for name, child in module.named_children():
        twin = _swapped(child, algo)
        if twin is not child:
            setattr(module, name, twin)
    return module


def _activation_name(fn, approximate="none"):
    """The fused-op name of an activation module or function (``approximate``: the
    gelu call's keyword), or None."""
    if type(fn) is torch.nn.GELU:
        approximate = fn.approximate
    elif fn is not F.gelu:
        return ACT_MODULES.get(type(fn)) or ACT_FUNCTIONS.get(fn)
    return {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)


def _activation_of(node, modules):
    if node.op == "call_module":
        return _activation_name(modules[node.target])
    if node.op == "call_function" and node.target in ACT_FUNCTIONS:
        return _activation_name(node.target, node.kwargs.get("approximate", "none"))
    if node.op == "call_method" and node.target in ACT_METHODS:
        return ACT_METHODS[node.target]
    return None


def _single_user(node):
    return len(node.users) == 1 and next(iter(node.users))


def _fuse_children(module, algo):
    # A module already rewritten must not be traced again: fx traces the class's
    # forward, which would apply the BatchNorm a second time.
    if getattr(module, "_fastcnn_fused", False) or not any(type(c) in (Conv2d, torch.nn.Linear)
                                                           for c in module.children()):
        return
    try:
        graph = _ChildrenAsLeaves().trace(module)
    except Exception:  # data-dependent control flow and the like: leave this forward alone
        return
    modules = dict(module.named_children())
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    fused_any = False
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1 or len(node.args) != 1 or node.kwargs:
            continue
        kind = type(modules.get(node.target))
        if kind is Conv2d:
            fused_any |= (_fuse_conv_bn_act(module, graph, modules, calls, node)
                          or _fuse_conv_act(module, graph, modules, node))
        elif kind is torch.nn.Linear:
            fused_any |= _fuse_linear_act(module, graph, modules, node, algo)
    if fused_any:
        graph.lint()
        gm = torch.fx.GraphModule(module, graph, class_name=type(module).__name__)
        module.forward = gm.forward  # the module keeps its class, attributes and state_dict
        module._fastcnn_fused = True


def _replace_chain(module, graph, chain, target, fused, args):
    """Put ``fused`` at ``target`` and call it with ``args`` in place of ``chain``."""
    setattr(module, target, fused)
    with graph.inserting_before(chain[-1]):
        new = graph.call_module(target, args)
    chain[-1].replace_all_uses_with(new)
    for node in reversed(chain):
        graph.erase_node(node)
    return True


def _fuse_conv_bn_act(module, graph, modules, calls, conv_node):
    """Conv2d -> BatchNorm2d [-> + residual] [-> activation] into FusedConv2dBN."""
    bn_node = _single_user(conv_node)
    if (not bn_node or bn_node.op != "call_module" or len(bn_node.args) != 1 or bn_node.kwargs
            or type(modules[bn_node.target]) is not torch.nn.BatchNorm2d or calls[bn_node.target] != 1
            or _hooked(modules[conv_node.target]) or _hooked(modules[bn_node.target])):
        return False
    chain, residual, activation = [conv_node, bn_node], None, "none"
    nxt = _single_user(bn_node)
    if (nxt and nxt.op == "call_function" and nxt.target in ADD_FUNCTIONS and len(nxt.args) == 2
            and not nxt.kwargs and isinstance(nxt.args[1 - nxt.args.index(bn_node)], torch.fx.Node)):
        residual = nxt.args[1 - nxt.args.index(bn_node)]
        chain.append(nxt)
        nxt = _single_user(nxt)
    if (nxt and _activation_of(nxt, modules) in ACTIVATIONS and len(nxt.args) == 1
            and not _hooked_node(nxt, modules)):
        activation = _activation_of(nxt, modules)
        chain.append(nxt)
    conv = modules[conv_node.target]
    fused = FusedConv2dBN.from_torch(conv, algo=conv.algo).fuse(modules[bn_node.target], activation)
    args = (conv_node.args[0],) if residual is None else (conv_node.args[0], residual)
    return _replace_chain(module, graph, chain, conv_node.target, fused, args)


def _fuse_conv_act(module, graph, modules, conv_node):
    """Conv2d -> activation (no BatchNorm between): the activation moves into the
    Conv2d's epilogue (``Conv2d.activation``); the activation module stays registered."""
    conv = modules[conv_node.target]
    act_node = _single_user(conv_node)
    activation = act_node and _activation_of(act_node, modules)
    if (activation not in ACTIVATIONS or conv.activation != "none"
            or len(act_node.args) != 1 or _hooked(conv)
            or _hooked_node(act_node, modules)):
        return False
    conv.activation = activation
    return _replace_chain(module, graph, [conv_node, act_node], conv_node.target, conv, conv_node.args)


def _fuse_linear_act(module, graph, modules, linear_node, algo):
    """Linear -> activation into fastcnn.nn.Linear(activation=): bias + activation
    in one pass after the matmul."""
    act_node = _single_user(linear_node)
    activation = act_node and _activation_of(act_node, modules)
    if (not activation or len(act_node.args) != 1 or _hooked(modules[linear_node.target])
            or _hooked_node(act_node, modules)):
        return False
    linear = modules[linear_node.target]
    fused = Linear.from_torch(linear, activation=activation, algo=algo)
    return _replace_chain(module, graph, [linear_node, act_node], linear_node.target, fused, linear_node.args)


def _fuse_encoder_layer(layer, algo):
    """torch.nn.TransformerEncoderLayer: fx cannot trace its forward (its fast-path
    checks call functions on the masks), so linear1 -> activation is fused here. Its
    inference fast path (one ATen kernel over the raw weights) would bypass every
    fastcnn module; clearing ``activation_relu_or_gelu`` is the switch torch itself
    reads to turn that path off."""
    activation = _activation_name(layer.activation)
    if (getattr(layer, "_fastcnn_fused", False) or activation is None or type(layer.linear1) is not torch.nn.Linear
            or _hooked(layer.linear1) or _hooked(layer.activation)):
        return
    layer.linear1 = Linear.from_torch(layer.linear1, activation=activation, algo=algo)
    layer.activation = torch.nn.Identity()
    layer.activation_relu_or_gelu = 0
    layer._fastcnn_fused = True
