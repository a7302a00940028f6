"""Build script: the Python packages, plus fastcnn._C when nvcc is found.

triton_kernels/ sits at the top of the repository (DESIGN.md) and installs as the
subpackage fastcnn.triton_kernels.

fastcnn._C (the CUDA backend, csrc/) is built from csrc/*.cu (nvcc) and
csrc/*.cpp (the host C++ compiler, with pybind11 and the CUDA runtime headers;
never libtorch) and linked against the static CUDA runtime, so the .so needs
only the NVIDIA driver at run time and works with any torch version.

Environment:
  FASTCNN_NO_CUDA=1        skip fastcnn._C (pure-Triton package).
  FASTCNN_CUDA_ARCHS       targets, separated by ';' ',' or spaces, e.g. "80;90a".
                           "80" / "8.0" / "sm_80" -> SASS for sm_80; "90a" -> SASS for
                           sm_90a (Hopper-only features); "compute_90" -> PTX only
                           (JIT-compiled by the driver on newer GPUs); "90+PTX" ->
                           both.  Default: DEFAULT_CUDA_ARCHS below.
  CUDA_HOME / CUDA_PATH    the CUDA toolkit; otherwise nvcc on PATH, then
                           /usr/local/cuda.
  CUDAHOSTCXX              host compiler for nvcc (-ccbin); CXX: compiler for the
                           .cpp files and the link (default c++).
  MAX_JOBS                 parallel compile jobs (default: CPU count).
  FASTCNN_NVCC_FLAGS / FASTCNN_CXX_FLAGS   extra flags (shell syntax).

When nvcc is not found the package installs without fastcnn._C and says so.
When nvcc is found, a failing build fails the install (set FASTCNN_NO_CUDA=1 to
install without the CUDA backend instead).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PACKAGES = ["fastcnn", "fastcnn.ops", "fastcnn.nn", "fastcnn.models", "fastcnn.bench", "fastcnn.triton_kernels"]

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"
# SASS for Ampere/Ada (sm_80 runs on 8.x) and Hopper (sm_90a: H100/H200, wgmma
# and TMA allowed), PTX compute_90 so Blackwell and later JIT-compile it.
DEFAULT_CUDA_ARCHS = "80;90a;compute_90"


def _say(msg):
    # stderr: pip shows it with -v, and always when the build fails.
    print(f"fastcnn setup: {msg}", file=sys.stderr, flush=True)


def _truthy(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------
# Finding CUDA
# ---------------------------------------------------------------------------
def _is_exe(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _toolkit_root_of(nvcc):
    """CUDA root for an nvcc binary; follows symlinks and wrapper scripts."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if _cuda_include_dir(root):
        return root
    # A wrapper script (e.g. /usr/local/bin/nvcc -> exec /usr/local/cuda-X/bin/nvcc):
    # ask nvcc itself where its toolkit is.
    try:
        out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
        m = re.search(r"^#\$ TOP=(.*)$", out.stdout + out.stderr, re.M)
        if m:
            root = os.path.normpath(m.group(1).strip())
            if _cuda_include_dir(root):
                return root
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _cuda_include_dir(root):
    for sub in ("include", os.path.join("targets", "x86_64-linux", "include"),
                os.path.join("targets", "sbsa-linux", "include")):
        d = os.path.join(root, sub)
        if os.path.isfile(os.path.join(d, "cuda_runtime_api.h")):
            return d
    return None


def _cuda_lib_dir(root):
    """(lib dir, static?) holding libcudart_static.a, else libcudart.so."""
    subs = ("lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"),
            os.path.join("targets", "sbsa-linux", "lib"))
    for lib in ("libcudart_static.a", "libcudart.so"):
        for sub in subs:
            d = os.path.join(root, sub)
            if os.path.isfile(os.path.join(d, lib)):
                return d, lib == "libcudart_static.a"
    return None, False


def find_cuda():
    """(nvcc, toolkit root), or None when no nvcc is found."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home:
            nvcc = os.path.join(home, "bin", "nvcc")
            if _is_exe(nvcc):
                candidates.append(nvcc)
            else:
                _say(f"{var}={home} has no bin/nvcc; looking for nvcc on PATH")
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(on_path)
    candidates.append("/usr/local/cuda/bin/nvcc")
    for nvcc in candidates:
        if _is_exe(nvcc):
            root = _toolkit_root_of(nvcc)
            if root is None:
                raise RuntimeError(f"found {nvcc} but not the CUDA toolkit it belongs to "
                                   "(no include/cuda_runtime_api.h); set CUDA_HOME, or "
                                   "FASTCNN_NO_CUDA=1 to install without fastcnn._C")
            return nvcc, root
    return None


# ---------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------
def parse_archs(spec):
    """'80;90a;compute_90' -> (['-gencode', 'arch=...,code=...', ...], ['sm_80', ...])."""
    flags, names = [], []
    for tok in re.split(r"[;,\s]+", spec.strip()):
        if not tok:
            continue
        t = tok.lower()
        ptx_only = t.startswith("compute_")
        t = t[len("compute_"):] if ptx_only else t
        plus_ptx = t.endswith("+ptx")
        t = t[:-len("+ptx")] if plus_ptx else t
        t = t[len("sm_"):] if t.startswith("sm_") else t
        m = re.fullmatch(r"(\d+)\.(\d)([af]?)|(\d{2,3})([af]?)", t)
        if not m:
            raise ValueError(f"FASTCNN_CUDA_ARCHS: cannot read {tok!r} (expected e.g. 80, 8.0, "
                             "sm_90a, 90+PTX or compute_90)")
        num, suffix = (m.group(1) + m.group(2), m.group(3)) if m.group(1) else (m.group(4), m.group(5))
        arch = f"{num}{suffix}"
        codes = []
        if not ptx_only:
            codes.append(f"sm_{arch}")
        if ptx_only or plus_ptx:
            codes.append(f"compute_{arch}")
        for c in codes:
            if c not in names:
                names.append(c)
        code = codes[0] if len(codes) == 1 else "[" + ",".join(codes) + "]"
        flags += ["-gencode", f"arch=compute_{arch},code={code}"]
    if not names:
        raise ValueError("FASTCNN_CUDA_ARCHS names no architecture")
    return flags, names


# ---------------------------------------------------------------------------
# pybind11 headers
# ---------------------------------------------------------------------------
def pybind11_include():
    try:
        import pybind11
        return pybind11.get_include()
    except ImportError:
        pass
    # No pybind11 (e.g. --no-build-isolation on a machine without a registry):
    # use the copy of pybind11 that torch ships.  Only pybind11/ is used from it.
    import importlib.util
    spec = importlib.util.find_spec("torch")
    if spec and spec.origin:
        inc = os.path.join(os.path.dirname(spec.origin), "include")
        if os.path.isfile(os.path.join(inc, "pybind11", "pybind11.h")):
            _say(f"pybind11 is not installed; using the copy shipped with torch ({inc})")
            return inc
    raise RuntimeError("building fastcnn._C needs pybind11 (pip install pybind11), "
                       "or set FASTCNN_NO_CUDA=1 to install without it")


def _find_ninja():
    exe = shutil.which("ninja")
    if exe:
        return exe
    try:
        import ninja
        exe = os.path.join(ninja.BIN_DIR, "ninja")
        return exe if _is_exe(exe) else None
    except (ImportError, AttributeError):
        return None


# ---------------------------------------------------------------------------
# build_ext
# ---------------------------------------------------------------------------
class CUDAExtension(Extension):
    """Marker: an extension built by BuildExt with nvcc."""


def _ninja_escape(path):
    return path.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


class BuildExt(build_ext):
    def build_extension(self, ext):
        if not isinstance(ext, CUDAExtension):
            return super().build_extension(ext)
        try:
            self._build_cuda(ext)
        except Exception as e:
            raise SystemExit(
                f"\nfastcnn setup: building fastcnn._C (the CUDA backend) failed: {e}\n"
                "nvcc was found, so this is an error rather than a silent fallback. Fix the "
                "toolchain, or set FASTCNN_NO_CUDA=1 to install the pure-Triton package.\n") from e

    def _build_cuda(self, ext):
        t0 = time.time()
        nvcc, root = ext.cuda
        inc = _cuda_include_dir(root)
        libdir, static = _cuda_lib_dir(root)
        if libdir is None:
            raise RuntimeError(f"no libcudart_static.a or libcudart.so under {root}")
        gencode, arch_names = parse_archs(os.environ.get("FASTCNN_CUDA_ARCHS") or DEFAULT_CUDA_ARCHS)

        build_temp = os.path.abspath(os.path.join(self.build_temp, "fastcnn_C"))
        os.makedirs(build_temp, exist_ok=True)
        _write_if_changed(os.path.join(build_temp, "fastcnn_build_config.h"),
                          "// generated by setup.py\n#pragma once\n"
                          f'#define FASTCNN_ARCH_LIST "{";".join(arch_names)}"\n')
        out = os.path.abspath(self.get_ext_fullpath(ext.name))
        os.makedirs(os.path.dirname(out), exist_ok=True)

        srcs = [os.path.abspath(s) for s in ext.sources]
        cu = [s for s in srcs if s.endswith(".cu")]
        cpp = [s for s in srcs if not s.endswith(".cu")]
        try:
            jobs = max(1, int(os.environ.get("MAX_JOBS", "0")) or (os.cpu_count() or 1))
        except ValueError:
            jobs = os.cpu_count() or 1
        # nvcc compiles the -gencode targets of one file in parallel with --threads;
        # give each .cu file its share of the cores.
        nvcc_threads = max(1, jobs // max(1, len(cu)))

        csrc = os.path.join(ROOT, CSRC)
        cxx = shlex.split(os.environ.get("CXX", "c++"))
        common = ["-O3", "-std=c++17", "-DNDEBUG", f"-I{csrc}", f"-I{build_temp}", f"-I{inc}"]
        nvcc_flags = [*common, "--expt-relaxed-constexpr", "-lineinfo", "-Xcompiler", "-fPIC",
                      "-Xcompiler", "-fvisibility=hidden", "-Wno-deprecated-gpu-targets",
                      f"--threads={nvcc_threads}", *gencode,
                      *shlex.split(os.environ.get("FASTCNN_NVCC_FLAGS", ""))]
        if os.environ.get("CUDAHOSTCXX"):
            nvcc_flags += ["-ccbin", os.environ["CUDAHOSTCXX"]]
        py_inc = {sysconfig.get_paths()["include"], sysconfig.get_paths()["platinclude"]}
        cxx_flags = [*common, "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-Wall",
                     f"-I{pybind11_include()}", *(f"-I{p}" for p in sorted(py_inc)),
                     *shlex.split(os.environ.get("FASTCNN_CXX_FLAGS", ""))]
        cudart = (["-lcudart_static", "-ldl", "-lrt", "-lpthread"] if static
                  else ["-lcudart", f"-Wl,-rpath,{libdir}"])
        if not static:
            _say(f"libcudart_static.a not found under {root}; linking libcudart.so dynamically")
        ldflags = ["-shared", f"-L{libdir}", *cudart, "-Wl,--exclude-libs,ALL", "-Wl,-O1"]

        def obj(src):
            return os.path.join(build_temp, os.path.basename(src) + ".o")

        objs = [obj(s) for s in cu + cpp]
        _say(f"building fastcnn._C with {nvcc} for {';'.join(arch_names)} "
             f"({len(cu)} .cu, {len(cpp)} .cpp, {jobs} jobs)")
        ninja = _find_ninja()
        if ninja:
            q = lambda args: " ".join(shlex.quote(a) for a in args)  # noqa: E731
            lines = [
                "ninja_required_version = 1.3",
                f"nvcc = {shlex.quote(nvcc).replace('$', '$$')}",
                f"cxx = {q(cxx).replace('$', '$$')}",
                f"nvcc_flags = {q(nvcc_flags).replace('$', '$$')}",
                f"cxx_flags = {q(cxx_flags).replace('$', '$$')}",
                f"ldflags = {q(ldflags).replace('$', '$$')}",
                "rule nvcc",
                "  command = $nvcc --generate-dependencies-with-compile --dependency-output "
                "$out.d $nvcc_flags -c $in -o $out",
                "  depfile = $out.d",
                "  deps = gcc",
                "  description = NVCC $in",
                "rule cxx",
                "  command = $cxx -MMD -MF $out.d $cxx_flags -c $in -o $out",
                "  depfile = $out.d",
                "  deps = gcc",
                "  description = CXX $in",
                "rule link",
                "  command = $cxx $in $ldflags -o $out",
                "  description = LINK $out",
            ]
            for s in cu:
                lines.append(f"build {_ninja_escape(obj(s))}: nvcc {_ninja_escape(s)}")
            for s in cpp:
                lines.append(f"build {_ninja_escape(obj(s))}: cxx {_ninja_escape(s)}")
            lines.append(f"build {_ninja_escape(out)}: link {' '.join(map(_ninja_escape, objs))}")
            lines.append(f"default {_ninja_escape(out)}")
            _write_if_changed(os.path.join(build_temp, "build.ninja"), "\n".join(lines) + "\n")
            subprocess.run([ninja, "-C", build_temp, "-j", str(jobs)], check=True)
        else:
            from concurrent.futures import ThreadPoolExecutor
            _say("ninja not found; compiling with plain subprocesses")
            cmds = ([[nvcc, *nvcc_flags, "-c", s, "-o", obj(s)] for s in cu]
                    + [[*cxx, *cxx_flags, "-c", s, "-o", obj(s)] for s in cpp])
            with ThreadPoolExecutor(jobs) as pool:
                for c, r in zip(cmds, pool.map(lambda c: subprocess.run(c), cmds)):
                    if r.returncode != 0:
                        raise RuntimeError(f"command failed ({r.returncode}): {shlex.join(c)}")
            subprocess.run([*cxx, *objs, *ldflags, "-o", out], check=True)
        _say(f"built {out} in {time.time() - t0:.1f} s")


def cuda_extensions():
    if _truthy("FASTCNN_NO_CUDA"):
        _say("FASTCNN_NO_CUDA is set: building the pure-Triton package; "
             "fastcnn._C (CUDA backend) will be unavailable")
        return []
    cuda = find_cuda()
    if cuda is None:
        _say("nvcc not found (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda): building the "
             "pure-Triton package; fastcnn._C (CUDA backend) will be unavailable")
        return []
    try:
        parse_archs(os.environ.get("FASTCNN_CUDA_ARCHS") or DEFAULT_CUDA_ARCHS)  # fail early
    except ValueError as e:
        raise SystemExit(f"fastcnn setup: {e}") from None
    sources = sorted(glob(os.path.join(CSRC, "*.cu")) + glob(os.path.join(CSRC, "*.cpp")))
    depends = sorted(glob(os.path.join(CSRC, "*.cuh")) + glob(os.path.join(CSRC, "*.h")))
    ext = CUDAExtension("fastcnn._C", sources=sources, depends=depends)
    ext.cuda = cuda
    return [ext]


setup(
    packages=PACKAGES,
    package_dir={"fastcnn.triton_kernels": "triton_kernels"},
    ext_modules=cuda_extensions(),
    cmdclass={"build_ext": BuildExt},
)
