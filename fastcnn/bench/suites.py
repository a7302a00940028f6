"""The built-in suites: conv2d, winograd, the fused conv-BN-ReLU (training) and
conv-BN-act (inference), depthwise, LRN, bias+activation and layer norm (op level)
and the model zoo (model level). See registry.py for how to add one."""
import copy
import difflib
import math

from fastcnn.bench.registry import BenchConfig, Case, Skip, register_suite

ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
OP_CONTENDERS = ("cudnn", "triton", "auto")
WINOGRAD_CONTENDERS = ("cudnn", "cuda", "triton", "auto")
WINOGRAD_TARGET_CHANNELS = 64
MODEL_CONTENDERS = ("cudnn", "compile", "triton", "auto")
# Row-wise ops: the eager PyTorch twin ("cudnn", as in every suite: what ATen runs),
# that under torch.compile (Inductor fuses the same pass), and fastcnn.
ROW_OP_CONTENDERS = ("cudnn", "compile", "triton", "auto")
# Every contender name some suite has ("cuda": depthwise, separable, Winograd).
ALL_CONTENDERS = tuple(sorted(set(OP_CONTENDERS + WINOGRAD_CONTENDERS + MODEL_CONTENDERS + ROW_OP_CONTENDERS)))

# The model suite's configured list (fastcnn.models names); those not registered are
# skipped with a note. Aliases cover the spellings a family module may choose.
MODELS = ["resnet50", "vgg16", "alexnet", "googlenet", "mobilenet_v2", "efficientnet_b0",
          "resnext50_32x4d", "densenet121", "vit_b_16"]
QUICK_MODELS = ["resnet50"]


def _torch_dtype(name):
    from fastcnn.bench.conv import DTYPES
    return DTYPES[name]


def _want(config, contenders):
    return [c for c in contenders if config.contenders is None or c in config.contenders]


def conv_bytes(layer, batch, dtype) -> int:
    """Compulsory DRAM traffic of one forward call: read x and w, write y, once."""
    p, q = layer.out_hw()
    elems = (batch * layer.c * layer.h * layer.w + layer.k * (layer.c // layer.groups) * layer.r * layer.s
             + batch * layer.k * p * q)
    return elems * ELEMENT_BYTES[dtype]


def _layers(config, default_networks=None):
    from fastcnn.bench.layers import all_layers
    layers = all_layers(config.networks or default_networks)
    return layers[::8] if config.quick else layers


def _passes(config):
    return [False, True] if config.backward else [False]


def _conv_cases(suite, layers, config, contenders, meta=lambda layer: {}, bound=None):
    """One case per (dtype, batch, layer, pass): ``ops.conv2d`` per contender and
    cuDNN on the same channels_last inputs. ``meta(layer)`` adds to the case's meta."""
    from fastcnn.bench.conv import conv_fn, layer_inputs, step_fn
    for dtype in config.dtypes:
        for batch in config.batch_list():
            for layer in layers:
                for backward in _passes(config):
                    pass_ = "fwd+bwd" if backward else "fwd"

                    def make(layer=layer, batch=batch, dtype=dtype, backward=backward):
                        x, w = layer_inputs(layer, batch, _torch_dtype(dtype), config.device, requires_grad=backward)
                        return {c: (lambda f=step_fn(conv_fn(c, layer), backward): f(x, w))
                                for c in _want(config, contenders)}

                    scale = 3 if backward else 1  # dgrad and wgrad each cost a forward
                    yield Case(suite=suite, name=layer.name, group=f"{suite}/{layer.name}/{dtype}/b{batch}/{pass_}",
                               make=make, flops=layer.flops(batch) * scale,
                               bytes=conv_bytes(layer, batch, dtype) * scale, dtype=dtype, batch=batch,
                               pass_=pass_, bound=bound, meta={"layer": layer.__dict__.copy(), **meta(layer)})


@register_suite("conv2d", kind="op")
def conv2d_suite(config: BenchConfig):
    """Every distinct conv layer of the benchmark networks, channels_last."""
    return _conv_cases("conv2d", _layers(config), config, OP_CONTENDERS)


@register_suite("winograd", kind="op")
def winograd_suite(config: BenchConfig):
    """CUDA Winograd vs cuDNN on VGG-16's and ResNet-50's 3x3 stride-1 convs.

    Every such layer, channels_last: algo "cuda" (Winograd) against cuDNN, Triton's
    direct kernel and auto. The target (>= 1.2x cuDNN) is on the layers with >= 64
    channels in and out, which the summary's target geomean covers (meta "in_target")."""
    from fastcnn.bench import layers as tables
    layers = [l for l in tables.VGG16 + tables.RESNET50
              if (l.r, l.s, l.stride, l.groups) == (3, 3, 1, 1)]
    layers = layers[::3] if config.quick else layers
    return _conv_cases("winograd", layers, config, WINOGRAD_CONTENDERS,
                       meta=lambda l: {"in_target": min(l.c, l.k) >= WINOGRAD_TARGET_CHANNELS})


def _conv_bn_cases(suite, config, train, callables):
    """One case per (dtype, batch, ResNet-50 layer) of conv -> BN -> ReLU; a training
    step (forward + backward) counts 3x the forward's FLOPs and traffic."""
    from fastcnn.bench.layers import RESNET50
    layers = [l for l in RESNET50 if l.groups == 1]
    layers = layers[::6] if config.quick else layers
    pass_, times = ("train", 3) if train else ("infer", 1)
    for dtype in config.dtypes:
        for batch in config.batch_list():
            for layer in layers:
                def make(layer=layer, batch=batch, dtype=dtype):
                    return callables(layer, batch, dtype, config)
                meta = {"layer": layer.__dict__.copy(), **({"autocast": dtype != "fp32"} if train else {})}
                yield Case(suite=suite, name=layer.name, group=f"{suite}/{layer.name}/{dtype}/b{batch}/{pass_}",
                           make=make, flops=layer.flops(batch) * times,
                           bytes=conv_bytes(layer, batch, dtype) * times, dtype=dtype, batch=batch, pass_=pass_,
                           meta=meta)


@register_suite("conv_bn_relu", kind="op")
def conv_bn_relu_suite(config: BenchConfig):
    """Training step of conv -> BN -> ReLU on ResNet-50's layers: fused vs eager."""
    return _conv_bn_cases("conv_bn_relu", config, True, conv_bn_relu_callables)


def conv_bn_relu_callables(layer, batch, dtype, config):
    """One training step (forward + backward) of conv -> BN -> ReLU, under autocast for
    bf16/fp16 as a mixed-precision run has it; eager ATen modules as 'cudnn'."""
    import torch
    import fastcnn.nn as fnn
    from fastcnn.bench.conv import layer_inputs
    x, _ = layer_inputs(layer, batch, torch.float32, config.device, requires_grad=True)
    autocast = dtype != "fp32"
    out = {}
    for c in _want(config, OP_CONTENDERS):
        if c == "cudnn":
            block = torch.nn.Sequential(
                torch.nn.Conv2d(layer.c, layer.k, layer.r, layer.stride, layer.padding, layer.dilation,
                                layer.groups, bias=False),
                torch.nn.BatchNorm2d(layer.k), torch.nn.ReLU(inplace=True))
        else:
            block = fnn.ConvBNReLU(layer.c, layer.k, layer.r, layer.stride, layer.padding, layer.dilation,
                                   layer.groups, algo=c)
        block = block.to(config.device).to(memory_format=torch.channels_last)

        def step(block=block):
            with torch.autocast(config.device, dtype=_torch_dtype(dtype), enabled=autocast):
                y = block(x)
            y.backward(torch.ones_like(y))
        out[c] = step
    return out


@register_suite("depthwise", kind="op")
def depthwise_suite(config: BenchConfig):
    """The depthwise convolutions of MobileNetV2 and EfficientNet-B0, channels_last:
    memory-bound, so GB/s against the compulsory traffic is the figure to read."""
    from fastcnn.bench import layers as tables
    layers = tables.DEPTHWISE[::4] if config.quick else tables.DEPTHWISE
    return _conv_cases("depthwise", layers, config, OP_CONTENDERS + ("cuda",), bound="memory")


@register_suite("lrn", kind="op")
def lrn_suite(config: BenchConfig):
    """Local response normalization on AlexNet's and GoogLeNet's shapes, channels_last.
    Forward reads x and writes y; forward+backward also reads dy and y, writes dx."""
    from fastcnn.bench.layers import LRN_LAYERS
    layers = LRN_LAYERS[::2] if config.quick else LRN_LAYERS
    for dtype in config.dtypes:
        for batch in config.batch_list():
            for name, c, h, w, size, alpha, beta, k in layers:
                for backward in _passes(config):
                    pass_ = "fwd+bwd" if backward else "fwd"

                    def make(c=c, h=h, w=w, size=size, alpha=alpha, beta=beta, k=k, batch=batch, dtype=dtype,
                             backward=backward):
                        import torch
                        import torch.nn.functional as F
                        from fastcnn.bench.conv import step_fn
                        from fastcnn.ops import local_response_norm
                        x = torch.randn(batch, c, h, w, device=config.device, dtype=_torch_dtype(dtype))
                        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(backward)

                        def fn(contender):
                            if contender == "cudnn":
                                return lambda x, _: F.local_response_norm(x, size, alpha, beta, k)
                            return lambda x, _: local_response_norm(x, size, alpha, beta, k, algo=contender)
                        return {cn: (lambda f=step_fn(fn(cn), backward, wrt=(0,)): f(x, None))
                                for cn in _want(config, OP_CONTENDERS + ("cuda",))}

                    elems = batch * c * h * w
                    yield Case(suite="lrn", name=name, group=f"lrn/{name}/{dtype}/b{batch}/{pass_}", make=make,
                               flops=None, bytes=elems * ELEMENT_BYTES[dtype] * (6 if backward else 2),
                               dtype=dtype, batch=batch, pass_=pass_, bound="memory", meta={"size": size})


@register_suite("conv_bn_act", kind="op")
def conv_bn_act_suite(config: BenchConfig):
    """Inference conv -> BN -> ReLU on ResNet-50's layers: BN folded into the conv vs
    eager cuDNN conv + BN + ReLU in eval mode."""
    return _conv_bn_cases("conv_bn_act", config, False, conv_bn_act_callables)


def conv_bn_act_callables(layer, batch, dtype, config):
    """relu(bn(conv(x))) in eval mode on one set of weights and running statistics
    (nothing requires grad, so no autograd graph is built): eager ATen as 'cudnn',
    ``ops.conv_bn_act(training=False)`` (BN folded into the conv's weights and bias,
    ReLU in its epilogue) per backend."""
    import torch
    import torch.nn.functional as F
    from fastcnn import ops
    from fastcnn.bench.conv import layer_inputs
    dt, dev = _torch_dtype(dtype), config.device
    x, w = layer_inputs(layer, batch, dt, dev)
    gamma, beta = torch.rand(layer.k, device=dev, dtype=dt) + 0.5, torch.randn(layer.k, device=dev, dtype=dt)
    mean, var = torch.randn(layer.k, device=dev, dtype=dt), torch.rand(layer.k, device=dev, dtype=dt) + 0.5
    conv = (layer.stride, layer.padding, layer.dilation, layer.groups)

    def eager():
        return F.relu(F.batch_norm(F.conv2d(x, w, None, *conv), mean, var, gamma, beta, training=False))

    def fused(algo):
        return lambda: ops.conv_bn_act(x, w, None, gamma, beta, mean, var, training=False, stride=layer.stride,
                                       padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                       activation="relu", algo=algo)
    return {c: eager if c == "cudnn" else fused(c) for c in _want(config, OP_CONTENDERS)}


def _row_op_cases(suite, layers, config, callables):
    """One case per (dtype, batch, layer, pass) of an op over the last dim of
    (batch, *shape) inputs (layers: (name, shape, ...)). Memory-bound: the forward
    reads x and writes y, forward+backward also reads dy and x and writes dx (the
    parameters and per-row statistics are small next to those)."""
    layers = layers[::3] if config.quick else layers
    for dtype in config.dtypes:
        for batch in config.batch_list():
            for layer in layers:
                name, shape = layer[0], layer[1]
                for backward in _passes(config):
                    pass_ = "fwd+bwd" if backward else "fwd"

                    def make(layer=layer, batch=batch, dtype=dtype, backward=backward):
                        return callables(layer, batch, _torch_dtype(dtype), backward, config)
                    yield Case(suite=suite, name=name, group=f"{suite}/{name}/{dtype}/b{batch}/{pass_}", make=make,
                               bytes=batch * math.prod(shape) * ELEMENT_BYTES[dtype] * (5 if backward else 2),
                               dtype=dtype, batch=batch, pass_=pass_, bound="memory",
                               meta={"shape": list(shape), **({"activation": layer[2]} if len(layer) > 2 else {})})


def _row_op_contenders(config, eager, fastcnn_op, args, backward):
    """{contender: step} for a row-wise op: ``eager(*args)`` as 'cudnn' and under
    torch.compile, ``fastcnn_op(*args, algo)`` per backend; with ``backward``,
    gradients for every argument."""
    import torch
    from fastcnn.bench.conv import step_fn

    def fn(contender):
        if contender == "cudnn":
            return eager
        if contender == "compile":
            return torch.compile(eager)
        return lambda *a: fastcnn_op(*a, contender)
    steps = {c: step_fn(fn(c), backward, wrt=tuple(range(len(args)))) for c in _want(config, ROW_OP_CONTENDERS)}
    return {c: (lambda f=f: f(*args)) for c, f in steps.items()}


@register_suite("bias_act", kind="op")
def bias_act_suite(config: BenchConfig):
    """act(x + bias) after the MLP Linear of ViT-B/L and ConvNeXt-T: fastcnn's one
    pass vs eager PyTorch and torch.compile."""
    from fastcnn.bench.layers import BIAS_ACT_LAYERS
    return _row_op_cases("bias_act", BIAS_ACT_LAYERS, config, bias_act_callables)


def bias_act_callables(layer, batch, dtype, backward, config):
    import torch
    from fastcnn import ops
    from fastcnn.triton_kernels.reference import ACTIVATION_FNS
    _, shape, activation = layer
    x = torch.randn(batch, *shape, device=config.device, dtype=dtype, requires_grad=backward)
    b = torch.randn(shape[-1], device=config.device, dtype=dtype, requires_grad=backward)
    act = ACTIVATION_FNS[activation]
    return _row_op_contenders(config, lambda x, b: act(x + b),
                              lambda x, b, algo: ops.bias_act(x, b, activation, algo=algo), (x, b), backward)


@register_suite("layer_norm", kind="op")
def layer_norm_suite(config: BenchConfig):
    """LayerNorm of ViT-B/L and ConvNeXt-T (channels_last): fastcnn vs F.layer_norm,
    eager and under torch.compile."""
    from fastcnn.bench.layers import LAYER_NORM_LAYERS
    return _row_op_cases("layer_norm", LAYER_NORM_LAYERS, config, layer_norm_callables)


def layer_norm_callables(layer, batch, dtype, backward, config):
    import torch
    import torch.nn.functional as F
    from fastcnn import ops
    _, shape = layer
    n, dev = shape[-1], config.device
    x = torch.randn(batch, *shape, device=dev, dtype=dtype, requires_grad=backward)
    w = (torch.rand(n, device=dev, dtype=dtype) + 0.5).requires_grad_(backward)
    b = torch.randn(n, device=dev, dtype=dtype, requires_grad=backward)
    return _row_op_contenders(config, lambda x, w, b: F.layer_norm(x, (n,), w, b),
                              lambda x, w, b, algo: ops.layer_norm(x, (n,), w, b, algo=algo), (x, w, b), backward)


def _norm(name):
    return name.lower().replace("-", "").replace("_", "").replace("/", "")


def resolve_model(name, registered):
    """The registered name for a configured one (``vit_b_16`` matches ``vit_b16``...)."""
    if name in registered:
        return name
    hits = [r for r in registered if _norm(r) == _norm(name)]
    return hits[0] if hits else None


def set_algo(model, algo):
    """Point every fastcnn module of ``model`` at one backend."""
    for m in model.modules():
        if hasattr(m, "algo"):
            m.algo = algo
    return model


def count_flops(model, x) -> int:
    """2 x the multiply-adds of one forward of ``model`` on ``x``'s shape, dtype and
    device, as ``fastcnn.models.summary`` counts them: convolutions, fully connected
    layers and multi-head attention, with fused blocks run module by module so that
    every layer is seen."""
    from fastcnn.models import summary
    s = summary(model, tuple(x.shape[1:]), x.shape[0], dtype=x.dtype, device=x.device, print_table=False)
    return s.flops * x.shape[0]


def _training_loss(out, labels):
    """Cross-entropy of the logits; GoogLeNet and Inception-v3 return (logits, aux...)
    in training mode, whose auxiliary losses count 0.3 each (torchvision's reference
    recipe for GoogLeNet; the weight does not change the work)."""
    import torch.nn.functional as F
    if isinstance(out, tuple):
        return F.cross_entropy(out[0].float(), labels) + 0.3 * sum(F.cross_entropy(a.float(), labels)
                                                                   for a in out[1:] if a is not None)
    return F.cross_entropy(out.float(), labels)


@register_suite("models", kind="model")
def model_suite(config: BenchConfig):
    """The zoo: inference (bf16, channels_last) and an AMP training step, images/s."""
    import fastcnn.models
    registered = fastcnn.models.list_models()
    names = config.models or (QUICK_MODELS if config.quick else MODELS)
    batches = config.model_batches or config.batch_list()
    for name in names:
        found = resolve_model(name, registered)
        if found is None:
            near = difflib.get_close_matches(name, registered, n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else " (fastcnn.models.list_models() has the names)"
            yield Skip("models", name, "not registered in fastcnn.models" + hint)
            continue
        for batch in batches:
            for pass_ in ("infer", "train"):
                case = Case(suite="models", name=found, group=f"models/{found}/b{batch}/{pass_}",
                            make=None, items=batch, dtype="bf16" if pass_ == "infer" else "amp-bf16",
                            batch=batch, pass_=pass_)
                case.make = (lambda case=case: model_callables(case, config))
                yield case


def model_callables(case, config):
    """{contender: step}: fastcnn with algo set per backend, the same architecture in
    plain PyTorch (algo='cudnn', i.e. ATen), and that under torch.compile. Sets
    ``case.flops`` from the model's layers."""
    import torch
    import fastcnn.models
    device = config.device
    train = case.pass_ == "train"
    base = fastcnn.models.create(case.name)
    base = base.to(device).to(memory_format=torch.channels_last)
    if not train:
        base = base.to(torch.bfloat16)
    base.train(train)
    x = torch.randn(case.batch, 3, 224, 224, device=device, dtype=torch.float32 if train else torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    flops = count_flops(set_algo(copy.deepcopy(base), "cudnn").eval(), x[:1].clone()) * case.batch
    case.flops = flops * (3 if train else 1)
    labels = torch.randint(0, 1000, (case.batch,), device=device)
    steps = {}
    for c in _want(config, MODEL_CONTENDERS):
        model = set_algo(copy.deepcopy(base), "cudnn" if c == "compile" else c)
        run = torch.compile(model) if c == "compile" else model
        if train:
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

            def step(run=run, opt=opt):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device, dtype=torch.bfloat16):
                    loss = _training_loss(run(x), labels)
                loss.backward()
                opt.step()
        else:
            def step(run=run):
                with torch.inference_mode():
                    run(x)
        steps[c] = step
    return steps

