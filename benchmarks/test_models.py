"""The model zoo: inference (bf16, channels_last) and a full AMP training step, for
fastcnn per backend, the same architecture in plain PyTorch ('cudnn': algo='cudnn',
i.e. ATen) and that under torch.compile ('compile'). Models not registered in
fastcnn.models are skipped with a note. Cases: fastcnn/bench/suites.py."""
import pytest

from _support import params
from fastcnn.bench.registry import BenchConfig, cases
from fastcnn.bench.suites import MODEL_CONTENDERS

CONFIG = BenchConfig(batches=(32, 128))


@pytest.mark.parametrize("contender", MODEL_CONTENDERS)
@pytest.mark.parametrize("case", params(cases(CONFIG, ["models"])))
def test_model(run_case, case, contender):
    run_case(case, contender, rounds=10, warmup_rounds=2)
