"""pytest-benchmark suites: GPU only, skipped cleanly without one.

    pytest benchmarks/ --benchmark-only --benchmark-json=benchmarks/results/<name>.json

Each test times one contender on one layer; ``group`` puts the contenders of a
layer side by side. The wall-clock figure pytest-benchmark prints covers whole
synchronized calls; ``extra_info`` carries the CUDA-event median (triton's
do_bench), TFLOP/s and the speedup over cuDNN measured in the same process."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA GPU")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _cudnn_benchmark():
    torch.backends.cudnn.benchmark = True
