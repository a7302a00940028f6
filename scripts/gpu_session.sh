#!/usr/bin/env bash
# What a lent GPU session runs: one prepared command per device call. A session has
# 15 minutes of device time in all, the machine's start included, and one call may
# run 600 s, so every stage set below is budgeted to finish inside GPU_SESSION_SECONDS
# (default 575 s):
#
#   bash scripts/gpu_session.sh all     # build; GPU tests; the other tests; compute-sanitizer;
#                                       # bench --quick; pytest benchmarks/; fastcnn profile
#   bash scripts/gpu_session.sh tests   # the whole suite, autotuned kernels, sanitizer
#   bash scripts/gpu_session.sh bench   # fastcnn bench: conv2d and conv-BN-ReLU, then the model zoo
#   bash scripts/gpu_session.sh bench2  # attention, depthwise, LRN, separable, Winograd, ViT, Mixer
#   bash scripts/gpu_session.sh --dry-run all   # print the stages, budgets and commands; run nothing
#   bash scripts/gpu_session.sh all --only 'install,profile-*'   # those stages alone (a rerun)
#
# Each stage runs under its own `timeout`, capped by the time left before the
# deadline; one that fails or times out is recorded and the next stage still runs.
# Only the CUDA build is a dependency: if nvcc fails or runs out of time, the
# pure-Triton package is installed instead and the stages that need fastcnn._C
# (compute-sanitizer) are skipped.
#
# The device tool brings back at most 8 files from $OUT, so logs and reports go to
# $WORK and are packed into $OUT/results.tar.gz after every stage (a run cut off by
# the call's limit still returns what it finished). $OUT also gets env.txt (GPU,
# driver, versions, date), stages.tsv (stage, rc, seconds, budget) and summary.txt
# (the gist of each log). Commit raw results under benchmarks/results/ with the GPU
# name, versions and date they carry.
set -u

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
dry=0 stage=all only=
while (( $# )); do
  case $1 in
    -n|--dry-run) dry=1 ;;
    --only) only=${2:?--only needs stage names, e.g. --only install,profile-*}; shift ;;
    --only=*) only=${1#--only=} ;;
    -h|--help) usage; exit 0 ;;
    all|tests|bench|bench2) stage=$1 ;;
    *) echo "gpu_session.sh: unknown argument '$1' (stages: all tests bench bench2; --dry-run, --only)" >&2
       exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-/tmp/fastcnn-gpu}
if (( dry )); then
  WORK=${WORK:-/tmp/fastcnn-gpu-work}
else
  mkdir -p "$OUT" && WORK=$(mktemp -d /tmp/fastcnn-gpu-work.XXXX) || exit 1
  : > "$OUT/summary.txt"
  printf 'stage\trc\tseconds\tbudget\n' > "$OUT/stages.tsv"
fi
export OUT WORK PYTHONUNBUFFERED=1
start=$(date +%s)
deadline=$(( start + ${GPU_SESSION_SECONDS:-575} ))
FASTCNN=(python3 -m fastcnn.cli)  # no need for the console script to be on the PATH

# --- the commands stages run (exported: each stage runs in its own `bash -c`) -------

env_info() {  # what every result must carry: GPU, driver, versions, date
  date -u +'date %Y-%m-%dT%H:%M:%SZ'
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
    'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.get_device_name())"
  nvcc --version | tail -1
  ncu --version | tail -1
  compute-sanitizer --version | tail -1
  git describe --always --dirty 2>/dev/null || echo "commit: unknown (no .git)"
  nvidia-smi
}

# setup.py builds three targets (sm_80, sm_90a, compute_90); the lent GPUs are Hopper,
# so one target cuts nvcc's time about threefold.
build() {
  MAX_JOBS=16 FASTCNN_CUDA_ARCHS=${FASTCNN_CUDA_ARCHS:-90a} \
    python3 -m pip install --no-deps --no-build-isolation -e .
}

build_triton_only() {
  touch "$WORK/no-ext"  # read by run_pytest and by the stages that need fastcnn._C
  FASTCNN_NO_CUDA=1 python3 -m pip install --no-deps --no-build-isolation -e .
}

# tests/conftest.py leaves the interpreter off on a GPU and sets FASTCNN_AUTOTUNE=0
# (one tile configuration per kernel). -v names each test as it ends, and
# FASTCNN_FAILURE_LOG gets each failure's traceback at once, so a run the timeout
# kills says how far it got and what failed.
run_pytest() {  # $1: log name, rest: pytest arguments
  local log=$1; shift
  local require_ext=1
  [[ -e $WORK/no-ext ]] && require_ext=0
  FASTCNN_REQUIRE_EXT=$require_ext FASTCNN_FAILURE_LOG="$WORK/failures-$log" \
    python3 -m pytest -v -p no:cacheprovider "$@"
}

# The CUDA kernels (csrc/) under compute-sanitizer, at the GPU tests' small sizes.
sanitize() {  # $1: memcheck or racecheck, rest: pytest arguments
  local tool=$1; shift
  compute-sanitizer --tool "$tool" --error-exitcode 9 python3 -m pytest -q -m gpu -p no:cacheprovider "$@"
}
export -f env_info build build_triton_only run_pytest sanitize

# --- the plan: name, budget in seconds, command ---------------------------------------

names=() budgets=() commands=() needs_ext=()
# COMMAND is kept as one quoted string for `bash -c`: a leading VAR=value word stays
# an assignment there, and the exported functions above can be named.
wanted() {  # is stage $1 among --only's comma-separated globs (all when none given)?
  [[ -z $only ]] && return 0
  local pattern patterns
  IFS=, read -ra patterns <<< "$only"
  for pattern in "${patterns[@]}"; do
    # shellcheck disable=SC2053  # a glob on purpose
    [[ $1 == $pattern ]] && return 0
  done
  return 1
}

plan() {  # [--needs-ext] NAME SECONDS COMMAND...
  local ext=0
  [[ $1 == --needs-ext ]] && { ext=1; shift; }
  wanted "$1" || return 0
  names+=("$1") budgets+=("$2") needs_ext+=("$ext")
  shift 2
  commands+=("$(printf '%q ' "$@")")
}

plan env 10 env_info
plan install 110 build
GPU_FILES=(tests/test_gpu.py tests/test_ext.py tests/test_winograd.py tests/test_depthwise.py tests/test_lrn.py
           tests/test_attention_kernels.py tests/test_separable.py tests/test_layer_norm.py tests/test_bias_act.py
           tests/test_cli.py tests/test_*.py)

plan_sanitizer() {  # $1: seconds per run
  local tool
  for tool in memcheck racecheck; do
    plan --needs-ext "$tool-ext" "$1" sanitize "$tool" tests/test_ext.py
    plan --needs-ext "$tool-winograd" "$1" sanitize "$tool" tests/test_winograd.py -k "nchw or fused or chunks or zero_input"
    plan --needs-ext "$tool-lrn-depthwise" "$1" sanitize "$tool" tests/test_lrn.py tests/test_depthwise.py \
      -k "cuda and nchw and float16 and not bfloat16 or empty_batch"
  done
}

case $stage in
all)
  # The GPU-marked tests first (real sizes, bf16, the CUDA kernels): no CPU run can
  # check them. Files in order of what matters most, should the time limit cut the run
  # short (pytest runs a file named twice once, where it is first named; a folder
  # argument would sort them all again).
  plan tests-gpu 140 run_pytest tests-gpu -m gpu "${GPU_FILES[@]}"
  # Then the CPU suite on the GPU, NaN propagation first: the GPU's max / min differ
  # from the interpreter's NumPy ones at NaN.
  plan tests-rest 40 run_pytest tests-rest tests/test_nan_propagation.py tests -m "not gpu" -x \
    --ignore=tests/test_compile_check.py
  plan_sanitizer 18
  # bench --quick autotunes every kernel and (model suite) runs torch.compile, which
  # together overran 90 s: here one tile configuration per kernel and the op suites
  # only (`--models` alone: none); the bench stage runs the models.
  plan bench-quick 60 env FASTCNN_AUTOTUNE=0 "${FASTCNN[@]}" bench --quick --models --no-charts \
    --out "$WORK/bench-quick"
  # pytest-benchmark's own report on two ResNet-50 3x3 layers (first tile
  # configuration, as above: these numbers check the harness, not the kernels' best).
  plan benchmarks 40 env FASTCNN_AUTOTUNE=0 python3 -m pytest -q -p no:cacheprovider \
    benchmarks/test_conv2d.py::test_conv2d -k "resnet50 and layer3 and conv2 and bf16 and b32 and not bwd" \
    --benchmark-only --benchmark-json="$WORK/benchmarks-first-config.json"
  # ncu on a tensor-core conv (igemm, bf16) and the fused attention kernel.
  plan profile-conv2d 30 env FASTCNN_AUTOTUNE=0 "${FASTCNN[@]}" profile --op conv2d \
    --case 'resnet50\.layer3\.0\.conv2/' --backend triton --tool ncu --out "$WORK/profile-conv2d"
  plan profile-attention 30 env FASTCNN_AUTOTUNE=0 "${FASTCNN[@]}" profile --op attention \
    --case 'vit_b_16/bf16/b64' --batch 64 --backend triton --tool ncu --out "$WORK/profile-attention"
  ;;
tests)
  plan tests 250 run_pytest tests tests -x
  plan tests-autotuned 80 FASTCNN_AUTOTUNE=1 run_pytest tests-autotuned \
    tests/test_attention_kernels.py tests/test_conv2d_igemm.py -x -m gpu
  plan_sanitizer 20
  ;;
bench)
  # Two runs, so a cut-off model suite loses only itself: the first names no model
  # (`--models` alone: none), the second no op suite (`--ops` alone: none).
  plan bench-ops 200 "${FASTCNN[@]}" bench --ops conv2d conv_bn_relu --models --dtypes bf16 --batch 32 \
    --out "$WORK/bench-ops"
  plan bench-models 250 "${FASTCNN[@]}" bench --ops --dtypes bf16 --batch 32 --out "$WORK/bench-models"
  ;;
bench2)
  plan bench2 440 "${FASTCNN[@]}" bench --ops attention depthwise lrn separable winograd \
    --models vit_b_16 mixer_b16 --dtypes bf16 --batch 64 --backward --out "$WORK/bench2"
  ;;
esac

# --- run it -----------------------------------------------------------------------------

say() { echo "$@" | tee -a "$OUT/summary.txt"; }
pack() { tar czf "$OUT/results.tar.gz" -C "$WORK" . ; }

total=0
for b in "${budgets[@]}"; do total=$(( total + b )); done
echo "gpu_session.sh $stage: ${#names[@]} stages, ${total} s budgeted of ${GPU_SESSION_SECONDS:-575} s"
for i in "${!names[@]}"; do
  printf '  %-24s %4s s  %s\n' "${names[i]}" "${budgets[i]}" "${commands[i]}"
done
(( dry )) && exit 0
echo "gpu_session.sh $stage: ${total} s budgeted" >> "$OUT/summary.txt"

record() {  # name rc seconds budget
  printf '%s\t%s\t%s\t%s\n' "$@" >> "$OUT/stages.tsv"
  local what="exit $2"
  [[ $2 == 124 || $2 == 137 ]] && what="timed out (exit $2)"
  [[ $2 == skipped ]] && what=skipped
  say "== $1: $what after $3 s (budget $4 s; $(( $(date +%s) - start )) s into the session)"
}

digest() {  # the lines of a stage's log worth reading in the summary
  local log=$WORK/$1.log
  case $1 in
    tests*) echo "$(grep -c ' PASSED' "$log") passed, $(grep -c ' FAILED' "$log") failed so far"
            grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed|skipped)" "$log" | tail -5 ;;
    memcheck-*|racecheck-*) grep -E "ERROR SUMMARY|[0-9]+ (passed|failed)" "$log" | tail -3 ;;
    profile-*) sed -n '/^kernel /,$p' "$log" | cut -c1-140; tail -3 "$log" ;;
    *) tail -8 "$log" ;;
  esac
}

run_stage() {  # index
  local name=${names[$1]} budget=${budgets[$1]} left=$(( deadline - $(date +%s) ))
  if (( needs_ext[$1] )) && [[ -e $WORK/no-ext ]]; then
    record "$name" skipped 0 "$budget"; say "   needs fastcnn._C, which did not build"; return
  fi
  (( budget > left )) && budget=$left
  if (( budget < 5 )); then
    record "$name" skipped 0 "$budget"; say "   no time left before the deadline"; return
  fi
  local t0
  t0=$(date +%s)
  timeout -k 5 "$budget" bash -c "${commands[$1]}" > "$WORK/$name.log" 2>&1
  local rc=$?
  record "$name" "$rc" $(( $(date +%s) - t0 )) "$budget"
  digest "$name" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
  [[ $name == env ]] && cp "$WORK/env.log" "$OUT/env.txt"
  if [[ $name == install && $rc != 0 ]]; then
    say "   the CUDA build failed: installing the pure-Triton package; fastcnn._C stages are skipped"
    names[$1]=install-triton-only budgets[$1]=40 commands[$1]=build_triton_only
    run_stage "$1"
  fi
  pack
}

for i in "${!names[@]}"; do run_stage "$i"; done
pack
say "gpu_session.sh $stage: done after $(( $(date +%s) - start )) s; logs and reports in $OUT/results.tar.gz"
