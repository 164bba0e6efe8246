#!/usr/bin/env bash
# The device check: the real-model path (Qwen3 shapes with random weights, bf16, LoRA, gradient checkpointing)
# through our trainer and through TRL, on whatever device torch sees, in under 10 minutes; nothing is downloaded.
# The logic is benchmarks/device_check.py (its docstring and --help); results go to
# benchmarks/results/device_check.json and docs/benchmarks.md (or --out / --table).
#
#   scripts/gpu_check.sh                                   # cuda: tiny, 0.6b, 4b-lora; cpu: tiny (about a minute)
#   scripts/gpu_check.sh --shapes tiny,0.6b --out "$OUT/device_check.json" --table "$OUT/device_check.md"
#
# Python: $PYTHON, else the repository's .venv/bin/python, else python3; the checked-out finestep is imported.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRL_EXPERIMENTAL_SILENCE=1
cd "$ROOT"
# a hard stop a little under 10 minutes, whatever hangs (the script's own --budget-s plans within it)
if command -v timeout >/dev/null; then
    exec timeout -k 10 "${GPU_CHECK_TIMEOUT:-590}" "$PY" benchmarks/device_check.py "$@"
fi
exec "$PY" benchmarks/device_check.py "$@"
