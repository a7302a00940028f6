"""Compile every Triton kernel for a GPU architecture, on a machine without a GPU.

Triton's interpreter, which is how CI runs the kernels, checks what a kernel
computes, not whether the GPU compiler takes it: it has no shared-memory limit and
no register file, and it accepts programs that fail to lower. This check runs the
launchers of ``fastcnn.triton_kernels`` on meta tensors shaped like the benchmark
layers, with a stand-in driver that reports the target GPU, so every launch
compiles (all autotune configurations, or the first one with FASTCNN_AUTOTUNE=0,
as the GPU tests run) through ptxas into a cubin and launches nothing. For each
compiled kernel it records shared memory, registers, the stack frame (spills) and
whether ``tl.dot`` became Hopper's wgmma.

A launch fails the check when a configuration does not compile, when none of its
configurations fits the architecture's shared memory (the autotuner skips the
configurations that do not fit; a launch with none left cannot run), or when its
grid has more blocks on an axis than CUDA launches (MAX_GRID).

It needs a process of its own: the kernel modules must be imported without
TRITON_INTERPRET=1 (``fastcnn compile-check`` sees to it).
"""
import contextlib
import dataclasses
import os
import re
import subprocess
import tempfile
import time

# Largest dynamic shared memory one block may opt in to, per compute capability
# (CUDA C Programming Guide, "Technical Specifications per Compute Capability").
MAX_SHARED_BYTES = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 100: 227 * 1024,
                    120: 99 * 1024}


# Most blocks per grid axis (x, y, z) of a CUDA launch, for every compute capability
# since 3.0: a launch past them fails ("invalid argument"), whatever the kernel.
MAX_GRID = (2**31 - 1, 65535, 65535)


def grid_limit_error(grid) -> str:
    """Why a launch ``grid`` (1 to 3 block counts) cannot run on CUDA; "" when it can."""
    g = tuple(int(n) for n in grid) + (1,) * (3 - len(grid))
    over = [f"axis {i} has {n} > {limit}" for i, (n, limit) in enumerate(zip(g, MAX_GRID)) if n > limit]
    return f"grid {g} exceeds CUDA's limits: {', '.join(over)}" if over else ""


@dataclasses.dataclass
class Compiled:
    """One compiled (kernel, specialization, configuration)."""
    kernel: str
    workload: str
    launch: int          # launches (one per autotuner call) number their configurations
    config: str
    shared: int          # bytes of shared memory (dynamic, as Triton reports it)
    registers: int = -1  # per thread, from the cubin (-1: unknown)
    stack: int = -1      # bytes of stack frame per thread: register spills, local arrays (-1: unknown)
    mma: str = ""        # "wgmma", "mma" or "" (no tensor-core instruction)
    hash: str = ""       # Triton's hash of the compiled kernel (repeats are cache hits)
    seconds: float = 0.0
    error: str = ""


class _TargetDriver:
    """What Triton asks of its driver to compile (not launch) for ``target``."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        import torch
        return torch.device("meta")


def cuobjdump():
    """Path of the cuobjdump that Triton's CUDA backend ships (None if absent)."""
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else None


def resource_usage(cubin: bytes):
    """(registers, stack frame bytes) per thread of the one kernel in a cubin, by
    cuobjdump (Triton's own copy); (-1, -1) when it cannot be read. Spilled registers
    live in the stack frame (cuobjdump's LOCAL counts only other local memory)."""
    tool = cuobjdump()
    if tool is None:
        return -1, -1
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs, stack = re.search(r"REG:(\d+)", out), re.search(r"STACK:(\d+)", out)
    return (int(regs.group(1)) if regs else -1), (int(stack.group(1)) if stack else -1)


def _mma_kind(ptx: str) -> str:
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    return "mma" if re.search(r"\bmma\.sync", ptx) else ""


def _config_text(kwargs):
    blocks = ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if k.startswith("BLOCK"))
    return f"{blocks} w{kwargs.get('num_warps', 4)} s{kwargs.get('num_stages', 3)}"


def _kernel_name(fn) -> str:
    """module.kernel: conv2d_igemm and conv2d_grouped both have a _forward_kernel."""
    module = getattr(fn, "module", None) or fn.fn.__module__
    return f"{module.rsplit('.', 1)[-1]}.{fn.__name__}"


class _Recorder:
    """Patches Triton so that a kernel launch compiles for the target and returns.

    ``JITFunction.run`` is called with warmup=True (compile, do not launch), and
    ``Autotuner.run`` compiles every configuration instead of timing them; its
    ``best_config`` is left at the last one, which the launchers that size
    buffers from it accept (any configuration's buffers are large enough)."""

    def __init__(self):
        self.records: list[Compiled] = []
        self.workload = ""
        self._launch = 0
        self._in_autotuner = False

    @contextlib.contextmanager
    def patched(self):
        from triton.runtime.autotuner import Autotuner
        from triton.runtime.jit import JITFunction
        jit_run, tuner_run = JITFunction.run, Autotuner.run
        recorder = self

        def run(fn, *args, grid, warmup, **kwargs):
            if not recorder._in_autotuner:
                recorder._launch += 1
            start = time.perf_counter()
            rec = Compiled(kernel=_kernel_name(fn), workload=recorder.workload, launch=recorder._launch,
                           config=_config_text(kwargs), shared=-1)
            try:
                compiled = jit_run(fn, *args, grid=grid, warmup=True, **kwargs)
            except Exception as e:  # noqa: BLE001 - every compiler error is a finding
                rec.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                compiled = None
            # the launch the GPU would get: the grid of this configuration
            meta = dict(zip(fn.arg_names, args), **kwargs)
            rec.error = rec.error or grid_limit_error(grid(meta) if callable(grid) else grid)
            rec.seconds = time.perf_counter() - start
            if compiled is not None:
                rec.shared = int(compiled.metadata.shared)
                rec.hash = str(compiled.metadata.hash)
                rec.registers, rec.stack = resource_usage(compiled.asm["cubin"])
                rec.mma = _mma_kind(compiled.asm.get("ptx", ""))
            recorder.records.append(rec)
            return compiled

        def tuner(self, *args, **kwargs):
            self.nargs = dict(zip(self.arg_names, args))
            configs = self.prune_configs(kwargs) if len(self.configs) > 1 else self.configs
            recorder._launch += 1
            recorder._in_autotuner = True
            try:
                for config in configs:
                    self.best_config = config
                    self.fn.run(*args, **kwargs, **config.all_kwargs())
            finally:
                recorder._in_autotuner = False
                self.nargs = None

        JITFunction.run, Autotuner.run = run, tuner
        try:
            yield self
        finally:
            JITFunction.run, Autotuner.run = jit_run, tuner_run


@contextlib.contextmanager
def _target(arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver
    previous = driver._active  # None until something asked for the driver
    driver.set_active(_TargetDriver(GPUTarget("cuda", arch, 32)))
    try:
        yield
    finally:
        driver._active = previous  # reset_active() would create a real driver, and find no GPU


# ----------------------------------------------------------------------------- workloads
#
# Each yields (name, thunk): the thunk calls one launcher on meta tensors. Shapes come
# from the benchmark tables, so the check compiles what the benchmarks will launch.

def _meta(*shape, dtype, channels_last=False):
    import torch
    t = torch.empty(shape, device="meta", dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _dtypes(quick, dot=None):
    """(tag, dtype, tf32) to compile for. ``dot``: the kernel has a tl.dot whose fp32
    precision follows a flag, "tf32" or "ieee" being PyTorch's default for it (cuDNN's
    flag is on, the matmul flag off); the full check compiles both, --quick the default."""
    import torch
    fp32 = [("fp32", torch.float32, True), ("fp32-ieee", torch.float32, False)] if dot else \
        [("fp32", torch.float32, False)]
    if quick:
        return [("bf16", torch.bfloat16, False), fp32[0] if dot != "ieee" else fp32[-1]]
    return [("bf16", torch.bfloat16, False), ("fp16", torch.float16, False)] + fp32


@contextlib.contextmanager
def _tf32(on):
    import torch
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


# Layers whose kernels cover every conv2d code path between them: the flattened
# (r, s, c) reduction of a 3-channel first layer (strides 4 and 2), per-tap 5x5 with
# groups=2, 3x3 strided and not, a strided 1x1, ResNeXt's 4-channel groups and
# depthwise 3x3/5x5 (the grouped-direct family).
QUICK_CONV_LAYERS = ("alexnet.conv1", "alexnet.conv2", "resnet50.conv1", "resnet50.layer2.0.conv2",
                     "resnet50.layer2.1.conv2", "resnet50.layer2.0.downsample",
                     "resnext50_32x4d.layer2.1.conv2", "mobilenet_v2.dw96_112_s2", "efficientnet_b0.dw240_28_k5")


def conv_workloads(quick):
    """conv2d forward (BN statistics; plain, bias + residual + ReLU epilogue), input
    and weight gradients on every distinct layer of the conv benchmark and the
    depthwise suite (--quick: QUICK_CONV_LAYERS, the statistics epilogue only)."""
    from fastcnn.bench.layers import DEPTHWISE, all_layers
    from fastcnn.triton_kernels import conv2d as tk
    layers = all_layers() + DEPTHWISE
    if quick:
        layers = [l for l in layers if l.name in QUICK_CONV_LAYERS]
    batch = 32
    for tag, dtype, tf32 in _dtypes(quick, dot="tf32"):
        for layer in layers:
            x = _meta(batch, layer.c, layer.h, layer.w, dtype=dtype, channels_last=True)
            w = _meta(layer.k, layer.c // layer.groups, layer.r, layer.s, dtype=dtype)
            bias = _meta(layer.k, dtype=dtype)
            geo = ((layer.stride,) * 2, (layer.padding,) * 2, (1, 1), layer.groups)
            y_shape = tk.conv_output_shape(x.shape, w.shape, *geo[:3])
            dy = _meta(*y_shape, dtype=dtype, channels_last=True)
            name = f"{layer.name}/{tag}"

            def fwd(x=x, w=w, bias=bias, res=dy, geo=geo, tf32=tf32):
                with _tf32(tf32):
                    tk.conv2d_forward(x, w, None, None, *geo, stats=True)
                    if not quick:  # the epilogue's other branches
                        tk.conv2d_forward(x, w, None, None, *geo)
                        tk.conv2d_forward(x, w, bias, res, *geo, activation="relu")

            def dgrad(dy=dy, w=w, x=x, geo=geo, tf32=tf32):
                with _tf32(tf32):
                    tk.conv2d_input_grad(dy, w, x.shape, *geo)

            def wgrad(dy=dy, w=w, x=x, geo=geo, tf32=tf32):
                with _tf32(tf32):
                    tk.conv2d_weight_grad(dy, x, w.shape, *geo)
            yield f"conv2d.forward {name}", fwd
            yield f"conv2d.input_grad {name}", dgrad
            yield f"conv2d.weight_grad {name}", wgrad


def batchnorm_workloads(quick):
    """The training-mode conv-BN-act kernels on ResNet-50's output shapes."""
    import torch
    from fastcnn.bench.layers import RESNET50
    from fastcnn.triton_kernels import batchnorm as bn
    from fastcnn.triton_kernels.conv2d import conv_output_shape
    shapes = sorted({conv_output_shape((32, l.c, l.h, l.w), (l.k, l.c, l.r, l.s), (l.stride,) * 2,
                                       (l.padding,) * 2, (1, 1)) for l in RESNET50})
    shapes = shapes[::3] if quick else shapes
    for tag, dtype, _ in _dtypes(quick):
        for shape in shapes:
            for channels_last in (True, False):
                y = _meta(*shape, dtype=dtype, channels_last=channels_last)
                c = shape[1]
                vec = _meta(c, dtype=torch.float32)

                def thunk(y=y, vec=vec):
                    bn.channel_stats(y)
                    for res in (None, y):
                        bn.bn_act_forward(y, vec, vec, vec, vec, res, "relu")
                        bn.bn_act_backward(y, y, vec, vec, vec, vec, res, "relu")
                layout = "nhwc" if channels_last else "nchw"
                yield f"batchnorm {tuple(shape)} {layout}/{tag}", thunk


def lrn_workloads(quick):
    from fastcnn.bench.layers import LRN_LAYERS
    from fastcnn.triton_kernels import lrn
    for tag, dtype, _ in _dtypes(quick):
        for name, c, h, w, size, alpha, beta, k in LRN_LAYERS[: 2 if quick else None]:
            for channels_last in (False, True):
                for within in (False, True):
                    x = _meta(32, c, h, w, dtype=dtype, channels_last=channels_last)

                    def thunk(x=x, size=size, alpha=alpha, beta=beta, k=k, within=within):
                        y, scale = lrn.lrn_forward(x, size, alpha, beta, k, within=within)
                        lrn.lrn_backward(x, x, y, scale, size, alpha, beta, k, within=within)
                    mode = "within" if within else "across"
                    yield f"lrn {name} {'nhwc' if channels_last else 'nchw'} {mode}/{tag}", thunk


def attention_workloads(quick):
    """Forward and both backward modes on the ViT shapes and long sequences of the
    attention suite, plus a mask and dropout."""
    import torch
    from fastcnn.bench.attention import LONG_HEAD_DIMS, VIT_SHAPES
    from fastcnn.triton_kernels import attention as at
    shapes = [(name, 8, h, l, d, False) for name, h, d, l in VIT_SHAPES]
    shapes += [(f"seq4096_d{d}{'_causal' if causal else ''}", 4, 16, 4096, d, causal)
               for d in LONG_HEAD_DIMS for causal in (False, True)]
    shapes += [("head_dim32", 2, 4, 300, 32, False), ("head_dim96", 2, 4, 300, 96, True)]
    # ViT-B/32 inference at batch 8192: 98304 (batch, head) slices, past the 65535
    # blocks of a grid's y axis
    shapes += [("vit_b_32_batch8192", 8192, 12, 50, 64, False)]
    if quick:  # head_dim 64, 80 (masked to BLOCK_D 128), causal 128, many slices
        shapes = [s for s in shapes if s[0] in ("vit_b_16", "vit_h_14", "seq4096_d128_causal", "vit_b_32_batch8192")]
    for tag, dtype, tf32 in _dtypes(quick, dot="ieee"):
        for name, b, h, seq, d, causal in shapes:
            qkv = _meta(b, seq, 3, h, d, dtype=dtype)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # a ViT block's strided views

            def thunk(q=q, k=k, v=v, causal=causal, tf32=tf32):
                with _tf32(tf32):
                    o, lse = at.attention_forward(q, k, v, causal=causal)
                    for deterministic in (False, True):
                        at.attention_backward(o, q, k, v, o, lse, causal=causal, deterministic=deterministic)
            yield f"attention {name}/{tag}", thunk
        q = _meta(2, 4, 197, 64, dtype=dtype)
        mask = _meta(2, 1, 197, 197, dtype=dtype)

        def masked(q=q, mask=mask):
            o, lse = at.attention_forward(q, q, q, mask=mask, dropout_p=0.1, seed=1)
            at.attention_backward(o, q, q, q, o, lse, mask=mask, dropout_p=0.1, seed=1)
            at.dropout_keep_mask(1, 0.1, 2, 4, 197, 197, q.device)
        yield f"attention mask+dropout/{tag}", masked


def transformer_workloads(quick):
    """LayerNorm (register rows and chunked long rows, with the residual add) and
    bias + activation at the ViT widths."""
    from fastcnn.triton_kernels import bias_act, layernorm
    widths = (768, 1024, 1280, 12288) if not quick else (768, 12288)
    for tag, dtype, _ in _dtypes(quick):
        for n in widths:
            x = _meta(8, 197, n, dtype=dtype)
            w = _meta(n, dtype=dtype)

            def ln(x=x, w=w):
                y, s, mean, rstd = layernorm.layer_norm_forward(x, w, w, residual=x)
                layernorm.layer_norm_backward(x, s, w, mean, rstd, dsum=x)
            yield f"layer_norm N={n}/{tag}", ln
        for n in widths[:3]:
            x = _meta(8, 197, 4 * n, dtype=dtype)
            b = _meta(4 * n, dtype=dtype)
            for act in ("gelu", "gelu_tanh", "relu", "silu"):
                def ba(x=x, b=b, act=act):
                    bias_act.bias_act_forward(x, b, act)
                    bias_act.bias_act_backward(x, x, b, act)
                yield f"bias_act N={4 * n} {act}/{tag}", ba


def separable_workloads(quick):
    from fastcnn.bench.separable import MOBILENET_V1_SEPARABLE
    from fastcnn.triton_kernels import separable
    layers = MOBILENET_V1_SEPARABLE[::3] if quick else MOBILENET_V1_SEPARABLE
    for tag, dtype, tf32 in _dtypes(quick, dot="tf32"):
        for name, c, k, size, stride in layers:
            x = _meta(32, c, size, size, dtype=dtype, channels_last=True)
            wd, bd = _meta(c, 1, 3, 3, dtype=dtype), _meta(c, dtype=dtype)
            wp, bp = _meta(k, c, 1, 1, dtype=dtype), _meta(k, dtype=dtype)

            def thunk(x=x, wd=wd, bd=bd, wp=wp, bp=bp, stride=stride, tf32=tf32):
                with _tf32(tf32):
                    separable.separable_conv2d_forward(x, wd, bd, wp, bp, None, (stride,) * 2, (1, 1), (1, 1),
                                                       "relu", "relu")
            yield f"separable {name}/{tag}", thunk


# The costliest first, so that parallel jobs share the work evenly.
WORKLOADS = {"attention": attention_workloads, "conv2d": conv_workloads, "separable": separable_workloads,
             "batchnorm": batchnorm_workloads, "lrn": lrn_workloads, "transformer": transformer_workloads}


# ----------------------------------------------------------------------------- run and report

def _compile(arch, quick, families, verbose):
    """One process's share of the check: (records, launcher errors)."""
    recorder = _Recorder()
    errors = []
    with _target(arch), recorder.patched():
        for family in families:
            for name, thunk in WORKLOADS[family](quick):
                recorder.workload = name
                try:
                    thunk()
                except Exception as e:  # noqa: BLE001 - a launcher that cannot reach its kernels
                    errors.append({"workload": name, "error": f"{type(e).__name__}: {e}"})
                if verbose:
                    print(f"compiled {name}", flush=True)
    return [dataclasses.asdict(r) for r in recorder.records], errors


def run(arch: int = 90, quick: bool = False, families=None, jobs: int = 1, verbose: bool = False) -> dict:
    """Compile every workload of ``families`` (default: all) for compute capability
    ``arch``, spread over ``jobs`` processes (a family each at a time); returns the
    report dict (its ``failures`` are what fails the check)."""
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", \
        "compile_check needs the kernels imported without TRITON_INTERPRET=1"
    import triton
    families = list(families or WORKLOADS)
    start = time.perf_counter()
    if jobs > 1:
        import concurrent.futures
        import multiprocessing
        # spawn: each worker imports the kernels afresh, under this process's environment
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(_compile, *zip(*[(arch, quick, [f], verbose) for f in families])))
    else:
        parts = [_compile(arch, quick, families, verbose)]
    records = [r for part, _ in parts for r in part]
    errors = [e for _, part in parts for e in part]
    limit = MAX_SHARED_BYTES.get(arch)
    return {"arch": arch, "quick": quick, "triton": triton.__version__, "max_shared_bytes": limit,
            "seconds": time.perf_counter() - start, "records": records, "launcher_errors": errors,
            "failures": failures(records, errors, limit)}


def _launches(records):
    """{(workload, launch): the records of its configurations}."""
    launches = {}
    for r in records:
        launches.setdefault((r["workload"], r["launch"]), []).append(r)
    return launches


def failures(records, launcher_errors, max_shared) -> list[str]:
    """What fails the check: compile errors, launcher errors, and launches of which
    no configuration fits in shared memory."""
    out = [f"{e['workload']}: {e['error']}" for e in launcher_errors]
    out += [f"{r['kernel']} [{r['config']}] for {r['workload']}: {r['error']}" for r in records if r["error"]]
    for (workload, _), recs in _launches(records).items():
        ok = [r for r in recs if not r["error"]]
        if max_shared and ok and all(r["shared"] > max_shared for r in ok):
            out.append(f"{recs[0]['kernel']} for {workload}: no configuration fits in {max_shared} bytes of "
                       f"shared memory (smallest needs {min(r['shared'] for r in ok)})")
    return out


def spilling_launches(report) -> list[str]:
    """Launches whose every configuration that fits spills registers: the autotuner
    has no spill-free choice there (a performance warning, not a failure)."""
    out = []
    limit = report["max_shared_bytes"] or float("inf")
    for (workload, _), recs in _launches(report["records"]).items():
        fits = [r for r in recs if not r["error"] and r["shared"] <= limit]
        if fits and min(r["stack"] for r in fits) > 0:
            best = min(fits, key=lambda r: r["stack"])
            out.append(f"{best['kernel']} for {workload}: {len(fits)} configuration(s), the least spilling "
                       f"[{best['config']}] has a {best['stack']}-byte stack frame")
    return out


def summary(report) -> list[dict]:
    """One row per kernel: how many compiles, and the worst shared memory, registers
    and spills over them."""
    rows = {}
    for r in report["records"]:
        row = rows.setdefault(r["kernel"], {"kernel": r["kernel"], "compiled": 0, "errors": 0,
                                            "max_shared": 0, "over_shared": 0, "max_registers": 0,
                                            "spilling": 0, "max_stack": 0, "mma": set(), "seconds": 0.0})
        row["compiled"] += 1
        row["seconds"] += r["seconds"]
        if r["error"]:
            row["errors"] += 1
            continue
        row["max_shared"] = max(row["max_shared"], r["shared"])
        row["over_shared"] += bool(report["max_shared_bytes"] and r["shared"] > report["max_shared_bytes"])
        row["max_registers"] = max(row["max_registers"], r["registers"])
        row["spilling"] += r["stack"] > 0
        row["max_stack"] = max(row["max_stack"], r["stack"])
        if r["mma"]:
            row["mma"].add(r["mma"])
    return [dict(row, mma=",".join(sorted(row["mma"])) or "-") for row in rows.values()]


def format_summary(report) -> str:
    lines = [f"Triton {report['triton']}, sm_{report['arch']}: {len(report['records'])} kernels compiled in "
             f"{report['seconds']:.0f} s (shared-memory limit {report['max_shared_bytes']} bytes)",
             "", "| kernel | compiled | errors | max shared KiB | over limit | max regs | spilling | max stack B "
                 "| mma |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in summary(report):
        lines.append(f"| {row['kernel']} | {row['compiled']} | {row['errors']} | {row['max_shared'] / 1024:.0f} | "
                     f"{row['over_shared']} | {row['max_registers']} | {row['spilling']} | {row['max_stack']} | "
                     f"{row['mma']} |")
    spills = spilling_launches(report)
    lines += ["", f"{len(spills)} launch(es) with no spill-free configuration" + (":" if spills else "")]
    lines += [f"  {w}" for w in spills[:50]]
    fails = report["failures"]
    lines += ["", f"{len(fails)} failure(s)" + (":" if fails else "")] + [f"  {f}" for f in fails[:50]]
    return "\n".join(lines)
