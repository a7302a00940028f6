"""fastcnn.nn.convert(model): put fastcnn's modules into an existing torch model.

1. Every torch.nn.Conv2d becomes a fastcnn.nn.Conv2d sharing its parameters, and
   every torch.nn.LocalResponseNorm a fastcnn.nn.LocalResponseNorm.
2. Conv2d -> BatchNorm2d [-> + residual] [-> activation] chains are fused into one
   fastcnn op. Fusion follows dataflow, not attribute order: each module's forward
   is traced with torch.fx (its children kept as leaves), and a chain is fused only
   when every intermediate value has a single user and the conv and BatchNorm are
   each called once. The module then runs the rewritten graph (its class, attributes
   and state_dict keys stay as they were). A module that cannot be traced keeps its
   forward; its children are still converted.
"""
import operator

import torch
import torch.fx
import torch.nn.functional as F

from fastcnn.nn.attention import MultiheadSelfAttention
from fastcnn.nn.conv import Conv2d
from fastcnn.nn.fused import ConvBNAct, FusedConv2dBN
from fastcnn.nn.lrn import LocalResponseNorm

ACT_MODULES = {torch.nn.ReLU: "relu", torch.nn.ReLU6: "relu6", torch.nn.SiLU: "silu"}
ACT_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.silu: "silu",
                 torch.nn.functional.gelu: "gelu"}
ACT_METHODS = {"relu": "relu", "relu_": "relu"}
ADD_FUNCTIONS = (operator.add, torch.add, operator.iadd)
FASTCNN_MODULES = (Conv2d, ConvBNAct)
# torch.nn type -> its fastcnn twin (a from_torch(module, algo=) builder sharing state)
SWAPS = {torch.nn.Conv2d: Conv2d, torch.nn.LocalResponseNorm: LocalResponseNorm,
         torch.nn.MultiheadAttention: MultiheadSelfAttention}


class _ChildrenAsLeaves(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return True


def convert(model: torch.nn.Module, fuse: bool = True, algo: str = "auto") -> torch.nn.Module:
    """Convert ``model`` in place (and return it). ``algo`` is given to every
    fastcnn module; ``fuse=False`` only swaps modules."""
    _swap_modules(model, algo)
    if fuse:
        for module in list(model.modules()):
            if module.__class__ not in FASTCNN_MODULES and not isinstance(module, FusedConv2dBN):
                _fuse_children(module)
    return model


def _swap_modules(module, algo):
    for name, child in module.named_children():
        if type(child) in SWAPS:
            setattr(module, name, SWAPS[type(child)].from_torch(child, algo=algo))
        elif isinstance(child, tuple(SWAPS.values())):
            child.algo = algo
        else:
            _swap_modules(child, algo)


def _activation_of(node, modules):
    if node.op == "call_module":
        m = modules[node.target]
        if type(m) is torch.nn.GELU and m.approximate == "none":
            return "gelu"
        return ACT_MODULES.get(type(m))
    if node.op == "call_function" and node.target in ACT_FUNCTIONS:
        if node.target is torch.nn.functional.gelu and node.kwargs.get("approximate", "none") != "none":
            return None
        return ACT_FUNCTIONS[node.target]
    if node.op == "call_method" and node.target in ACT_METHODS:
        return ACT_METHODS[node.target]
    return None


def _single_user(node):
    return len(node.users) == 1 and next(iter(node.users))


def _fuse_children(module):
    # A module already rewritten must not be traced again: fx traces the class's
    # forward, which would apply the BatchNorm a second time.
    if getattr(module, "_fastcnn_fused", False) or not any(type(c) is Conv2d for c in module.children()):
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
    for conv_node in list(graph.nodes):
        if conv_node.op != "call_module" or type(modules.get(conv_node.target)) is not Conv2d:
            continue
        bn_node = _single_user(conv_node)
        if (not bn_node or bn_node.op != "call_module" or len(bn_node.args) != 1 or bn_node.kwargs
                or type(modules[bn_node.target]) is not torch.nn.BatchNorm2d
                or calls[conv_node.target] != 1 or calls[bn_node.target] != 1
                or len(conv_node.args) != 1 or conv_node.kwargs):
            continue
        chain, residual, activation = [conv_node, bn_node], None, "none"
        nxt = _single_user(bn_node)
        if (nxt and nxt.op == "call_function" and nxt.target in ADD_FUNCTIONS and len(nxt.args) == 2
                and not nxt.kwargs and isinstance(nxt.args[1 - nxt.args.index(bn_node)], torch.fx.Node)):
            residual = nxt.args[1 - nxt.args.index(bn_node)]
            chain.append(nxt)
            nxt = _single_user(nxt)
        if nxt and _activation_of(nxt, modules) and len(nxt.args) == 1:
            activation = _activation_of(nxt, modules)
            chain.append(nxt)
        conv = modules[conv_node.target]
        fused = FusedConv2dBN.from_torch(conv, algo=conv.algo).fuse(modules[bn_node.target], activation)
        setattr(module, conv_node.target, fused)
        with graph.inserting_before(chain[-1]):
            args = (conv_node.args[0],) if residual is None else (conv_node.args[0], residual)
            new = graph.call_module(conv_node.target, args)
        chain[-1].replace_all_uses_with(new)
        for node in reversed(chain):
            graph.erase_node(node)
        fused_any = True
    if fused_any:
        graph.lint()
        gm = torch.fx.GraphModule(module, graph, class_name=type(module).__name__)
        module.forward = gm.forward  # the module keeps its class, attributes and state_dict
        module._fastcnn_fused = True

