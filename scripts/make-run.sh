#!/usr/bin/env bash
# `make run`: the example pretraining job end to end on the embedded platform (2 CPU
# workers), then its final status, a metrics summary, where the checkpoint is, and a
# loss-curve PNG next to the run. Exit 0 iff the job Succeeded.
#
#   scripts/make-run.sh [MANIFEST]      (state in $CARINA_STATE_DIR, default runs/embedded)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
MANIFEST=${1:-examples/pretrain-tiny.yaml}
STATE=${CARINA_STATE_DIR:-runs/embedded}
export CARINA_STATE_DIR=$STATE

echo "--- carina run $MANIFEST (embedded platform, state in $STATE)"
rc=0
"$PY" -m carina.platform run "$MANIFEST" --embedded --state-dir "$STATE" || rc=$?

echo
"$PY" -m carina.platform.embedded.report --state-dir "$STATE" "$MANIFEST" || true
exit "$rc"
