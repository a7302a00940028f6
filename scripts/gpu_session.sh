#!/usr/bin/env bash
# What one lent GPU session runs, in three device calls of at most 10 minutes each
# (the install/build included), i.e. all of a session's 30 minutes of device time:
#
#   bash scripts/gpu_session.sh tests   # build, every test on CUDA, compute-sanitizer
#   bash scripts/gpu_session.sh bench   # fastcnn bench report: conv2d, conv-BN-ReLU, models
#   bash scripts/gpu_session.sh bench2  # fastcnn bench report: attention, depthwise, LRN, separable,
#                                       # ViT-B/16 and Mixer-B/16
#
# Everything lands in $OUT (the device tool brings it back); commit the raw results
# under benchmarks/results/ with the GPU name, versions and date they carry.
set -u
stage=${1:?usage: gpu_session.sh tests|bench|bench2}
OUT=${OUT:-/tmp/fastcnn-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

{ date -u; nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"; } > "$OUT/env-$stage.txt" 2>&1
python3 -m pip install --no-deps --no-build-isolation -e . > "$OUT/install-$stage.log" 2>&1 \
  || { tail -40 "$OUT/install-$stage.log"; exit 1; }

case "$stage" in
tests)
  # On a GPU, tests/conftest.py leaves the interpreter off: every test runs the real
  # kernels on CUDA, and the gpu-marked ones run at real layer sizes.
  # tests/conftest.py sets FASTCNN_AUTOTUNE=0 (one tile configuration per kernel);
  # the second run autotunes for real (attention's dq is reset between trials, the
  # conv statistics read Autotuner.best_config).
  FASTCNN_REQUIRE_EXT=1 timeout 270 python3 -m pytest tests -q -x -p no:cacheprovider \
    --junitxml="$OUT/tests.xml" > "$OUT/tests.log" 2>&1
  echo "tests exit $?"; tail -5 "$OUT/tests.log"
  FASTCNN_AUTOTUNE=1 timeout 60 python3 -m pytest tests/test_attention_kernels.py tests/test_conv2d_igemm.py \
    -q -x -m gpu -p no:cacheprovider > "$OUT/tests-autotuned.log" 2>&1
  echo "autotuned tests exit $?"; tail -3 "$OUT/tests-autotuned.log"
  # The CUDA kernels (csrc/) under compute-sanitizer, at the GPU tests' small sizes.
  for tool in memcheck racecheck; do
    timeout 50 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      python3 -m pytest tests/test_ext.py -q -m gpu -p no:cacheprovider > "$OUT/sanitizer-$tool.log" 2>&1
    echo "compute-sanitizer $tool exit $?"; tail -3 "$OUT/sanitizer-$tool.log"
    timeout 50 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      python3 -m pytest tests/test_winograd.py -q -m gpu -k "nchw or fused or chunks or zero_input" \
      -p no:cacheprovider > "$OUT/sanitizer-winograd-$tool.log" 2>&1
    echo "compute-sanitizer winograd $tool exit $?"; tail -3 "$OUT/sanitizer-winograd-$tool.log"
  done
  ;;
bench)
  # $OUT brings back at most 8 files: the report (json, md, a speedup and a roofline
  # chart per suite) and this stage's env file.
  rm -f "$OUT/install-$stage.log"
  timeout 540 fastcnn bench --ops conv2d conv_bn_relu --models --dtypes bf16 --batch 32 \
    --out "$OUT/report" > "$OUT/report.log" 2>&1
  echo "fastcnn bench exit $?"; tail -25 "$OUT/report.log"
  ;;
bench2)
  rm -f "$OUT/install-$stage.log"
  timeout 540 fastcnn bench --ops attention depthwise lrn separable --models vit_b_16 mixer_b16 --dtypes bf16 --batch 64 \
    --backward --out "$OUT/report" > "$OUT/report.log" 2>&1
  echo "fastcnn bench exit $?"; tail -25 "$OUT/report.log"
  ;;
*) echo "unknown stage $stage"; exit 2 ;;
esac
