"""The suite registry behind ``fastcnn bench``, ``fastcnn profile`` and ``benchmarks/``.

A suite is a function ``fn(config) -> iterable of Case`` registered with
``@register_suite(name, kind="op" | "model")``. A ``Case`` is cheap to create (no
tensors, no GPU): its ``make`` builds the inputs and returns one zero-argument
callable per contender only when the case is about to be timed. Adding an op or a
model family to every report, to the pytest-benchmark files and to the profiler is
therefore a few lines::

    @register_suite("lrn", kind="op")
    def lrn_suite(config):
        for shape in SHAPES:
            yield Case(suite="lrn", name=f"lrn {shape}", group=f"lrn/{shape}",
                       flops=..., bytes=..., make=lambda: {"cudnn": ..., "triton": ...})
"""
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

DEFAULT_DTYPES = ("bf16", "fp32")
DEFAULT_BATCHES = (32,)


@dataclass
class BenchConfig:
    """What ``fastcnn bench`` runs. ``None`` means every registered suite / model."""
    ops: Optional[list] = None
    models: Optional[list] = None
    networks: Optional[list] = None        # conv layers of these networks (bench/layers.py)
    dtypes: tuple = DEFAULT_DTYPES
    batches: Optional[tuple] = None        # None: each suite's default (batch_list)
    model_batches: Optional[tuple] = None  # default: batch_list()
    backward: bool = False                 # op suites: forward+backward as well
    quick: bool = False
    device: str = "cuda"
    contenders: Optional[list] = None      # restrict to these contender names
    warmup_ms: float = 25.0
    rep_ms: float = 100.0

    def batch_list(self, default=DEFAULT_BATCHES) -> tuple:
        """The batches a suite runs: ``--batch`` where given, else the suite's own
        default (attention: the issue's ViT batches)."""
        return tuple(self.batches) if self.batches else tuple(default)


@dataclass
class Case:
    """One timed workload. ``make()`` returns {contender: zero-argument callable};
    every callable of a case runs on the same inputs, dtype and memory layout.

    ``flops`` / ``bytes``: work and compulsory memory traffic of one call (None when
    unknown); ``items``: images per call (model suites: images/s). ``baseline`` is
    the contender speedups are measured against. ``bound="memory"`` marks a case that
    is memory-bound by nature (normalizations, elementwise ops, depthwise convs): the
    report shows its GB/s and % of DRAM bandwidth; otherwise the roofline decides."""
    suite: str
    name: str
    group: str
    make: Callable[[], dict]
    flops: Optional[float] = None
    bytes: Optional[float] = None
    items: Optional[int] = None
    dtype: Optional[str] = None
    batch: Optional[int] = None
    pass_: str = "fwd"
    baseline: str = "cudnn"
    bound: Optional[str] = None
    meta: dict = field(default_factory=dict)

    def key(self) -> str:
        """Identifies the case across runs (what ``--compare`` matches on)."""
        return f"{self.suite}|{self.group}"


@dataclass
class Skip:
    """Yielded by a suite for a workload it cannot run here (e.g. a model that is not
    registered yet); the report lists it with the reason."""
    suite: str
    name: str
    reason: str


@dataclass(frozen=True)
class Suite:
    name: str
    kind: str  # "op" or "model"
    fn: Callable[[BenchConfig], Iterable[Case]]
    doc: str = ""


SUITES: dict = {}


def register_suite(name: str, kind: str = "op"):
    assert kind in ("op", "model"), kind

    def wrap(fn):
        if name in SUITES:
            raise ValueError(f"fastcnn.bench: suite {name!r} is registered twice")
        SUITES[name] = Suite(name, kind, fn, (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return wrap


def load_builtin_suites():
    """Import the modules that register the built-in suites."""
    from fastcnn.bench import attention, separable, suites  # noqa: F401


def list_suites(kind: Optional[str] = None) -> list:
    load_builtin_suites()
    return [s for s in SUITES.values() if kind is None or s.kind == kind]


def cases(config: BenchConfig, names: Optional[list] = None, kind: Optional[str] = None) -> list:
    """Every case (and ``Skip``) of the named suites (default: all of ``kind``), in order."""
    load_builtin_suites()
    chosen = list_suites(kind) if names is None else [_suite(n) for n in names]
    out = []
    for suite in chosen:
        out.extend(suite.fn(config))
    return out


def _suite(name):
    if name not in SUITES:
        raise ValueError(f"fastcnn bench: unknown suite {name!r}; known: {sorted(SUITES)}")
    return SUITES[name]
