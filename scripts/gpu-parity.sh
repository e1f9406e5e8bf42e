#!/usr/bin/env bash
# Run the whole parity suite on this machine's GPU, in one command, and write the report.
#
#   scripts/gpu-parity.sh [ARTIFACTS_DIR]        (or: make parity-gpu)
#
# With ARTIFACTS_DIR (an export or unpacked bundle with artifacts.json), checks it; otherwise
# exports every variant (VARIANTS, WEIGHTS) into OUT first. The SavedModel and ONNX artifacts
# get a second row on GPU:0; without a GPU those rows read "skipped: no GPU" (never a pass),
# or fail when REQUIRE_GPU=1. Exit status: 0 all passed, 1 a check failed, 2 usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
VARIANTS=${VARIANTS:-"dense conv dropout"}
WEIGHTS=${WEIGHTS:-random:0}
OUT=${OUT:-build/gpu-parity}
BATCH=${BATCH:-4}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} PYTHONHASHSEED=${PYTHONHASHSEED:-0}

cli() { "$PY" -m export.cli "$@"; }

echo "== devices"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L || true; else echo "nvidia-smi: not found"; fi
"$PY" - <<'PY'
from export import import_tensorflow_quietly
tf = import_tensorflow_quietly()
import onnxruntime as ort
print("tensorflow GPUs:", [g.name for g in tf.config.list_physical_devices("GPU")] or "none (GPU rows: skipped: no GPU)")
print("onnxruntime providers:", ort.get_available_providers())
PY

if [[ $# -ge 1 ]]; then
    DIR=$1
else
    mkdir -p "$OUT/artifacts"
    DIR=$(cd "$OUT/artifacts" && pwd)  # absolute: artifacts.json paths are then relative to DIR
    for v in $VARIANTS; do
        echo "== export $v ($WEIGHTS) -> $DIR"
        cli export --variant "$v" --weights "$WEIGHTS" --out "$DIR" --overwrite
    done
fi

REPORT=${REPORT:-$OUT/report}
args=(parity --artifacts "$DIR" --batch-size "$BATCH" --report "$REPORT")
[[ $# -ge 1 ]] || args+=(--weights "$WEIGHTS")
[[ "${REQUIRE_GPU:-0}" == 1 ]] && args+=(--require-gpu)
echo "== parity ${args[*]:1}"
status=0
cli "${args[@]}" || status=$?
echo "== report: $REPORT/parity.md and $REPORT/parity.json (exit $status)"
exit $status
