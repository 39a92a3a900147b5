#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one run of under 10 minutes on a CUDA machine that already
# has torch and triton (Python 3.12), from the repository root:
#
#     bash benchmarks/gpu_check.sh            # installs the rest from .whl/ (docs/benchmarks.md, "GPU check")
#     bash benchmarks/gpu_check.sh --dry-run  # CPU, tiny shapes, no install: checks the script and the report
#
# Parts, each under `timeout` with its own allowance (seconds, below) and never more than what is left
# of the total budget; a part that fails or runs out of time is reported as such, with the end of its
# log, and the next part runs:
#   install  pip install --no-index from .whl/ (never torch or triton), then the project, editable
#   kernel   the fused guided step vs a device copy, eager torch and torch.compile at the Wan2.1-1.3B 480p
#            and Wan2.1-14B 720p latent shapes (benchmarks.kernel_bench's measurement)
#   step     one denoising step of a random-weight Wan2.1-1.3B-config transformer, bf16, 832x480, 81
#            frames, CFG on, unguided vs guided through a 4-block reward trunk, B = 1 and 2; the unguided
#            step again on each attention kernel the GPU runs (--attention-backend: cuDNN, flash, sage...)
#   batch    one step of a server batch (BatchState) of that model: a relative-mode row and a best_of_n row
#            of 2 particles; peak memory against the admission estimate (guidance/memory.py); again on
#            cuda:1 as part batch-cuda1 when the machine has two GPUs
#   cache    --step-cache: a BatchState step of that model with every denoiser call full vs every call after
#            the row's first skipped (what a skipped call costs, and a step's time at the demo's skip shares)
#   serve    that random pipeline saved to disk, then benchmarks.bench_vs_diffusers on it
#   compile  --compile: a BatchState step of that model eager vs compiled (inductor), unguided and guided,
#            B = 1 and 2, at 832x480 x 33 frames (benchmarks.compile_bench), after its warm-up
# Every part records the torch, triton and diffusers versions it ran with in its JSON.
# Output: $OUT if set, else out/gpu-check/: gpu-check.md (a section for docs/benchmarks.md),
# gpu-check.json (every figure) and gpu-check.log (every part's log), three files in all.
set -euo pipefail

DRY_RUN=0
PART=""  # internal: `--part install|serve` runs that part alone (run_part calls the script so, under timeout)
while (( $# )); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --part) PART="${2:?--part needs a name}"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --dry-run or nothing)" >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-out/gpu-check}"
mkdir -p "$OUT_DIR"
if [[ -z $PART ]]; then
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/nrg-gpu-check.XXXXXX")"
  export GPU_CHECK_WORK="$WORK"
  trap 'rm -rf "$WORK"' EXIT
else
  WORK="${GPU_CHECK_WORK:?--part is internal: run bash benchmarks/gpu_check.sh [--dry-run]}"
fi
# The repository itself is importable whether or not the editable install works.
export PYTHONPATH="$ROOT:$ROOT/clients/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

# Time allowances in seconds (install + kernel + step + batch (+ batch-cuda1) + cache + serve + compile <= 590 s,
# under 10 minutes with the report; a second GPU's batch part takes what the budget has left).
BUDGET_S="${GPU_CHECK_BUDGET_S:-590}"
INSTALL_S=40
KERNEL_S=90
STEP_S=100
BATCH_S=60
CACHE_S=30
SERVE_S=140
COMPILE_S=120
# The server-vs-diffusers workload: the step part's shape, 4 steps instead of 50 and 2 requests a side
# (plus 1 untimed warm-up each), so both sides' loads, runs, VAE decodes and encodes fit SERVE_S.
SERVE_ARGS=(--num-prompts 2 --rounds 1 --steps 4 --size 832x480 --num-frames 81 --max-batch 2
            --warmup-requests 1 --device cuda --dtype bfloat16 --disable-tqdm)
PIPE_DIR="$WORK/wan-random-1.3b"
# The compile part: 33 frames instead of 81, so that the inductor warm-up and 4 steps of each variant fit
# COMPILE_S.
COMPILE_ARGS=(--model wan1.3b --size 832x480 --frames 33 --batches 1,2 --rounds 1 --repeats 3 --device cuda
              --dtype bfloat16)
if [[ $DRY_RUN == 1 ]]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  SERVE_ARGS=(--num-prompts 2 --rounds 1 --steps 2 --size 32x32 --num-frames 5 --max-batch 2
              --warmup-requests 1 --device cpu --dtype float32 --disable-tqdm)
  PIPE_DIR="$WORK/wan-tiny"
  COMPILE_ARGS=(--model tiny --backend eager --batches 1,2 --rounds 1 --repeats 1 --device cpu --dtype float32)
fi
DRY=()
[[ $DRY_RUN == 1 ]] && DRY=(--dry-run)

START=$(date +%s)
# run_part NAME ALLOWANCE COMMAND...: runs COMMAND under timeout, logs to $WORK/NAME.log, records
# "NAME<TAB>exit status<TAB>seconds taken<TAB>seconds allowed" in $WORK/parts.tsv; never fails itself.
run_part() {
  local name=$1 allowance=$2 left rc t0
  shift 2
  left=$(( BUDGET_S - ($(date +%s) - START) ))
  (( left < allowance )) && allowance=$left
  if (( allowance < 5 )); then
    echo "no time left of the ${BUDGET_S} s budget" >"$WORK/$name.log"
    printf '%s\t%s\t%s\t%s\n' "$name" 124 0 "$allowance" >>"$WORK/parts.tsv"
    return 0
  fi
  echo "== $name (allowance ${allowance} s): $*"
  t0=$(date +%s%N)
  set +e
  timeout --kill-after=10 "$allowance" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  set -e
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%s\t%d.%03d\t%s\n' "$name" "$rc" $(( ms / 1000 )) $(( ms % 1000 )) "$allowance" >>"$WORK/parts.tsv"
  echo "== $name: exit status $rc after $(( ms / 1000 )) s"
  return 0
}

install_deps() {
  [[ -d .whl ]] || { echo ".whl/ is missing: fill it with the pip download command in docs/benchmarks.md"; return 1; }
  # Keep the machine's torch and triton exactly as they are.
  "$PY" -c 'import importlib.metadata as m
for n in ("torch", "triton"):
    try: print(f"{n}=={m.version(n)}")
    except m.PackageNotFoundError: pass' >"$WORK/keep.txt"
  cat "$WORK/keep.txt"
  "$PY" -m pip install --no-index --find-links .whl --no-cache-dir --disable-pip-version-check -c "$WORK/keep.txt" \
      -r benchmarks/gpu_check_requirements.txt \
    || { echo "resolving against the installed packages failed; installing .whl/ without dependency checks";
         "$PY" -m pip install --no-index --find-links .whl --no-cache-dir --disable-pip-version-check --no-deps \
             -r benchmarks/gpu_check_requirements.txt; }
  "$PY" -m pip install --no-index --no-deps --no-build-isolation --disable-pip-version-check -e . -e clients/python \
    || echo "the editable install failed; the parts import the repository through PYTHONPATH"
  "$PY" -c 'import torch, triton, diffusers, fastapi, uvicorn, av, nrg_client, benchmarks.bench_vs_diffusers
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "triton", triton.__version__, "diffusers", diffusers.__version__)'
}

serve() {
  "$PY" -m benchmarks.gpu_check save-pipeline "$PIPE_DIR" "${DRY[@]}"
  "$PY" -m benchmarks.bench_vs_diffusers --model "$PIPE_DIR" "${SERVE_ARGS[@]}" --output-file "$WORK/serve.json"
}

case "$PART" in
  "") ;;
  install) install_deps; exit ;;
  serve) serve; exit ;;
  *) echo "gpu_check.sh: unknown part $PART" >&2; exit 2 ;;
esac

if [[ $DRY_RUN == 0 ]]; then
  run_part install "$INSTALL_S" bash "$0" --part install
fi
run_part kernel "$KERNEL_S" "$PY" -m benchmarks.gpu_check kernel --work "$WORK" "${DRY[@]}"
run_part step "$STEP_S" "$PY" -m benchmarks.gpu_check step --work "$WORK" "${DRY[@]}"
run_part batch "$BATCH_S" "$PY" -m benchmarks.gpu_check batch --work "$WORK" "${DRY[@]}"
run_part cache "$CACHE_S" "$PY" -m benchmarks.gpu_check cache --work "$WORK" "${DRY[@]}"
run_part serve "$SERVE_S" bash "$0" --part serve "${DRY[@]}"
run_part compile "$COMPILE_S" "$PY" -m benchmarks.compile_bench "${COMPILE_ARGS[@]}" --output-file "$WORK/compile.json"
if [[ $DRY_RUN == 0 ]] && (( $(nvidia-smi -L 2>/dev/null | wc -l) >= 2 )); then
  GPU_CHECK_DEVICE=cuda:1 GPU_CHECK_PART=batch-cuda1 \
    run_part batch-cuda1 "$BATCH_S" "$PY" -m benchmarks.gpu_check batch --work "$WORK"
fi
rm -rf "$PIPE_DIR"

COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ $COMMIT != unknown ]] && [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  COMMIT="$COMMIT with uncommitted changes"
fi
[[ $COMMIT == unknown ]] && COMMIT="unknown (no git checkout here)"
for name in install kernel step batch cache serve compile batch-cuda1; do
  [[ -f "$WORK/$name.log" ]] && { echo "===== $name"; cat "$WORK/$name.log"; } >>"$OUT_DIR/gpu-check.log.tmp"
done
mv -f "$OUT_DIR/gpu-check.log.tmp" "$OUT_DIR/gpu-check.log" 2>/dev/null || true
COMMAND="bash benchmarks/gpu_check.sh"
[[ $DRY_RUN == 1 ]] && COMMAND="$COMMAND --dry-run"
"$PY" -m benchmarks.gpu_check report --work "$WORK" --out "$OUT_DIR/gpu-check.md" "${DRY[@]}" \
  --command "$COMMAND" --serve-args "--model DIR ${SERVE_ARGS[*]}" --commit "$COMMIT"
echo "wrote $OUT_DIR/gpu-check.md, gpu-check.json, gpu-check.log in $(( $(date +%s) - START )) s"
