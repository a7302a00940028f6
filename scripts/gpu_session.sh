#!/usr/bin/env bash
# What a lent GPU session runs. A session has 15 minutes of device time in all, the
# machine's start (a minute or two) included, and one call may run 10 minutes, so the
# default stage does everything that matters most in one call of about 9 minutes:
#
#   bash scripts/gpu_session.sh all     # build; GPU-marked tests; every other test;
#                                       # compute-sanitizer; a --quick fastcnn bench
#
# and the longer stages are for a later session that has time left over:
#
#   bash scripts/gpu_session.sh tests   # the whole suite, autotuned kernels, sanitizer
#   bash scripts/gpu_session.sh bench   # fastcnn bench: conv2d, conv-BN-ReLU, models
#   bash scripts/gpu_session.sh bench2  # attention, depthwise, LRN, separable, Winograd, ViT, Mixer
#
# The device tool brings back at most 8 files from $OUT, so every log and report is
# written under $WORK and packed into $OUT/results.tar.gz after each step (a run cut
# off by the call's limit still returns what it finished), with the step summaries in
# $OUT/summary.txt. Commit the raw results under benchmarks/results/ with the GPU
# name, versions and date they carry.
set -u
stage=${1:-all}
OUT=${OUT:-/tmp/fastcnn-gpu}
WORK=$(mktemp -d /tmp/fastcnn-gpu-work.XXXX)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
say() { echo "$@" | tee -a "$OUT/summary.txt"; }
pack() { tar czf "$OUT/results.tar.gz" -C "$WORK" . ; }

{ date -u; nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"; } > "$WORK/env.txt" 2>&1
cp "$WORK/env.txt" "$OUT/env.txt"
MAX_JOBS=16 python3 -m pip install --no-deps --no-build-isolation -e . > "$WORK/install.log" 2>&1 \
  || { tail -40 "$WORK/install.log"; pack; exit 1; }
say "installed after $(elapsed) s"

# tests/conftest.py leaves the interpreter off on a GPU (every test runs the real
# kernels on CUDA) and sets FASTCNN_AUTOTUNE=0 (one tile configuration per kernel).
# -v names each test as it ends, and FASTCNN_FAILURE_LOG gets each failure's traceback
# at once: a run the timeout kills says how far it got and what failed.
run_tests() {  # $1: seconds, $2: log name, rest: pytest arguments
  local budget=$1 log=$2; shift 2
  FASTCNN_REQUIRE_EXT=1 FASTCNN_FAILURE_LOG="$WORK/failures-$log" timeout "$budget" \
    python3 -m pytest -v -p no:cacheprovider "$@" > "$WORK/$log" 2>&1
  local rc=$?
  say "$log: exit $rc after $(elapsed) s; $(grep -c ' PASSED' "$WORK/$log") passed, $(grep -c ' FAILED' "$WORK/$log") failed so far"
  grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed|skipped)" "$WORK/$log" | tail -5 | tee -a "$OUT/summary.txt"
  pack
}

# The CUDA kernels (csrc/) under compute-sanitizer, at the GPU tests' small sizes.
sanitize() {  # $1: seconds per tool
  for tool in memcheck racecheck; do
    { timeout "$1" compute-sanitizer --tool "$tool" --error-exitcode 9 \
        python3 -m pytest tests/test_ext.py -q -m gpu -p no:cacheprovider
      echo "test_ext.py exit $?"
      timeout "$1" compute-sanitizer --tool "$tool" --error-exitcode 9 \
        python3 -m pytest tests/test_winograd.py -q -m gpu -p no:cacheprovider \
        -k "nchw or fused or chunks or zero_input"
      echo "test_winograd.py exit $?"
      timeout "$1" compute-sanitizer --tool "$tool" --error-exitcode 9 \
        python3 -m pytest tests/test_lrn.py tests/test_depthwise.py -q -m gpu -p no:cacheprovider \
        -k "cuda and nchw and float16 and not bfloat16 or empty_batch"
      echo "test_lrn.py test_depthwise.py exit $?"; } > "$WORK/sanitizer-$tool.log" 2>&1
    say "compute-sanitizer $tool after $(elapsed) s:"
    grep -E "exit|ERROR SUMMARY" "$WORK/sanitizer-$tool.log" | tail -6 | tee -a "$OUT/summary.txt"
    pack
  done
}

case "$stage" in
all)
  # The GPU-marked tests first (real sizes, bf16, the CUDA kernels): they are what no
  # CPU run can check. Then the rest of the suite, the sanitizer and a quick report.
  # Files in order of what matters most, should the time limit cut the run short:
  # the conv matrix at real sizes, the CUDA kernels, then the other Triton kernels and
  # any other file (pytest runs a file named twice once, where it is first named; a
  # folder argument would sort them all again).
  run_tests 200 tests-gpu.log -m gpu tests/test_gpu.py tests/test_ext.py tests/test_winograd.py \
    tests/test_depthwise.py tests/test_lrn.py tests/test_attention_kernels.py tests/test_separable.py \
    tests/test_layer_norm.py tests/test_bias_act.py tests/test_cli.py tests/test_*.py
  run_tests 60 tests-rest.log tests -m "not gpu" -x --ignore=tests/test_compile_check.py
  sanitize 20
  timeout 90 fastcnn bench --quick --no-charts --out "$WORK/report" > "$WORK/report.log" 2>&1
  say "fastcnn bench --quick: exit $? after $(elapsed) s"; tail -8 "$WORK/report.log" | tee -a "$OUT/summary.txt"
  pack
  ;;
tests)
  run_tests 300 tests.log tests -x
  FASTCNN_AUTOTUNE=1 run_tests 90 tests-autotuned.log tests/test_attention_kernels.py tests/test_conv2d_igemm.py -x -m gpu
  sanitize 50
  ;;
bench)
  timeout 500 fastcnn bench --ops conv2d conv_bn_relu --models --dtypes bf16 --batch 32 \
    --out "$WORK/report" > "$WORK/report.log" 2>&1
  say "fastcnn bench exit $? after $(elapsed) s"; tail -25 "$WORK/report.log" | tee -a "$OUT/summary.txt"
  pack
  ;;
bench2)
  timeout 500 fastcnn bench --ops attention depthwise lrn separable winograd --models vit_b_16 mixer_b16 --dtypes bf16 \
    --batch 64 --backward --out "$WORK/report" > "$WORK/report.log" 2>&1
  say "fastcnn bench exit $? after $(elapsed) s"; tail -25 "$WORK/report.log" | tee -a "$OUT/summary.txt"
  pack
  ;;
*) echo "unknown stage $stage (all tests bench bench2)"; exit 2 ;;
esac
