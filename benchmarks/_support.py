"""Shared by the benchmark files (imported by name: pytest puts benchmarks/ on sys.path)."""
import pytest

from fastcnn.bench.registry import Skip


def params(items):
    """pytest params for a suite's cases (a ``Skip`` becomes a skipped param)."""
    out = []
    for c in items:
        if isinstance(c, Skip):
            out.append(pytest.param(None, id=f"{c.suite}/{c.name}", marks=pytest.mark.skip(reason=c.reason)))
        else:
            out.append(pytest.param(c, id=c.group))
    return out
