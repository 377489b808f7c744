#!/usr/bin/env bash
# The GPU check of one machine with a CUDA GPU, in under 8 minutes, no arguments:
#
#   bench/gpu_check.sh
#
# 1. the virtual environment, as `make venv` makes it (nothing to do when it is current);
# 2. the CUDA twins of the device-parametrized unit tests (`pytest -m cuda`: pretraining in
#    bf16, generation, SSR, evaluation, quantization; the multi-rank ones skip below 2 GPUs);
# 3. bench/gpu_pretrain.py: tokens/s and MFU of the 350m preset in bf16 on one card, Carina's
#    loop against a plain PyTorch loop.
#
# One JSON document of results goes to $OUT (when set) or runs/gpu-check/, its path printed
# last: {"tests": {passed, failed, skipped, errors, failures, exitCode}, "pretrain": {...
# bench/gpu_pretrain.py's figures...}, "pretrainExitCode"}. The script exits non-zero when
# either part failed. Each part has a time limit that keeps the whole under 8 minutes:
# TESTS_TIMEOUT (default 120 s) and BENCH_TIMEOUT (default 300 s), in seconds.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=.venv/bin/python
TESTS_TIMEOUT="${TESTS_TIMEOUT:-120}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-300}"
out_dir="${OUT:-runs/gpu-check}"
mkdir -p "$out_dir"
result="$out_dir/gpu-check-$(date -u +%Y%m%dT%H%M%SZ).json"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

make venv
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== CUDA unit tests (pytest -m cuda)"
tests_rc=0
timeout "$TESTS_TIMEOUT" "$PY" -m pytest tests/unit tests/integration/processes -m cuda -q -p no:cacheprovider \
    --junitxml "$work/tests.xml" || tests_rc=$?

echo "== bench/gpu_pretrain.py"
bench_rc=0
timeout "$BENCH_TIMEOUT" "$PY" bench/gpu_pretrain.py --json "$work/pretrain.json" || bench_rc=$?

"$PY" - "$work" "$result" "$tests_rc" "$bench_rc" <<'EOF'
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

work, result, tests_rc, bench_rc = Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:])
tests = {"exitCode": tests_rc}
if (work / "tests.xml").exists():
    suite = ET.parse(work / "tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    skipped = sorted(
        {(s.get("message") or "").strip() for s in suite.iter("skipped") if s.get("message")}
    )
    tests |= {
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
        "failures": failed,
        "skipReasons": skipped,
        "seconds": float(suite.get("time", 0)),
    }
pretrain = work / "pretrain.json"
doc = {
    "tests": tests,
    "pretrain": json.loads(pretrain.read_text()) if pretrain.exists() else None,
    "pretrainExitCode": bench_rc,
}
result.write_text(json.dumps(doc, indent=1) + "\n")
EOF

echo "results: $result"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
