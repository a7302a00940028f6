"""Build csrc/ (the CUDA kernels and bindings.cpp) for the CPU, as a host emulation.

The GPU runs these kernels; CI has none, so without this the CUDA code would only be
compiled there, never run. Here the same sources compile with g++ against the
headers in ``include/`` (a host model of the CUDA runtime, the kernel language,
fp16/bf16 and wmma), each ``kernel<<<grid, block, smem, stream>>>(args)`` rewritten
into ``::emu::Launch(grid, block, smem, stream)(kernel, args)``, and link with
pybind11 into a module with fastcnn._C's exact Python API whose "device pointers" are
CPU addresses. What it checks: the kernels' index arithmetic, windows, tiling, edge
and padding handling, the bindings' argument checks and the Python wrappers around
them; built with FASTCNN_EMU_SANITIZE=1, also every access's bounds (AddressSanitizer)
and undefined behaviour (UBSan). What it cannot: timing, the memory model (each block
runs alone; its threads are fibers meeting at barriers), and hardware rounding inside
the tensor cores (the emulated wmma accumulates exact products in fp32).
"""
import concurrent.futures
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "csrc"

_LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^;<>]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)


def emulated_source(text: str) -> str:
    """A .cu file's text with every kernel launch rewritten for the emulator."""
    out = _LAUNCH.sub(lambda m: f"::emu::Launch({m.group(2)})({m.group(1)}, ", text)
    if "<<<" in out:
        raise ValueError("a kernel launch the emulator's rewrite did not recognise is left")
    return out


def _sources():
    return sorted(CSRC.glob("*.cu")) + [CSRC / "bindings.cpp"]


# FASTCNN_EMU_SANITIZE=1 builds with AddressSanitizer and UBSan: out-of-bounds
# accesses to tensors (heap), to __shared__ arrays (function statics, so globals to
# ASan) and to a thread's locals, and undefined behaviour such as int32 overflow in
# index arithmetic, abort the run. The process must have libasan loaded first
# (LD_PRELOAD; test_cuda_emulated.py's sanitized run does this).
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]


def _sanitize() -> bool:
    return os.environ.get("FASTCNN_EMU_SANITIZE", "0") == "1"


def _sanitize_flags() -> list:
    return SANITIZE_FLAGS if _sanitize() else []


def _fingerprint() -> str:
    h = hashlib.sha256(b"sanitize" if _sanitize() else b"")
    for p in _sources() + sorted(CSRC.glob("*.h")) + sorted(CSRC.glob("*.cuh")) + sorted(HERE.glob("include/*.h")) \
            + [Path(__file__)]:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def build(out_dir: Path, jobs: int = 2):
    """Compile the emulated extension into ``out_dir`` (reused while the sources are
    unchanged) and import it; returns the module."""
    import pybind11
    out_dir = Path(out_dir) / _fingerprint()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = out_dir / f"_C{suffix}"
    if not target.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fastcnn_build_config.h").write_text('#define FASTCNN_ARCH_LIST "sm_90 (host emulation)"\n')
        flags = ["-std=c++20", "-O1", "-fPIC", "-pthread", "-w", f"-I{HERE / 'include'}", f"-I{CSRC}",
                 f"-I{out_dir}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
        flags += _sanitize_flags()
        commands = []
        for src in _sources():
            obj = out_dir / (src.stem + ".o")
            if src.suffix == ".cu":
                cpp = out_dir / (src.stem + ".cpp")
                cpp.write_text(emulated_source(src.read_text()))
                commands.append(["g++", *flags, "-D__CUDACC__", "-x", "c++", "-c", str(cpp), "-o", str(obj)])
            else:
                commands.append(["g++", *flags, "-c", str(src), "-o", str(obj)])
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            for cmd, proc in zip(commands, pool.map(lambda c: subprocess.run(c, capture_output=True, text=True),
                                                    commands)):
                if proc.returncode:
                    raise RuntimeError(f"emulated build failed: {' '.join(cmd)}\n{(proc.stdout + proc.stderr)[-6000:]}")
        objects = [cmd[-1] for cmd in commands]
        tmp = target.with_suffix(".tmp")
        subprocess.run(["g++", "-shared", "-pthread", *_sanitize_flags(), *objects,
                        "-o", str(tmp)], check=True, capture_output=True)
        os.replace(tmp, target)
    spec = importlib.util.spec_from_file_location("_C", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    mod = build(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fastcnn-cuda-emu"))
    print(mod.__file__, mod.available())
