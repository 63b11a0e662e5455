#!/usr/bin/env bash
# The GPU checks as one short run on a GPU machine (a session's device tool gives ~15 min):
# the device tests (tests_device/: the fast paths, mixed precision, determinism, the CLI
# end to end, DDP with 2+ GPUs, torch.compile), then benchmarks/gpu_throughput.py.
# Results go to $OUT (the device tool brings that folder back), else /tmp/inflame-device.
#
#   bash tools/device-check.sh [--no-benchmark]
#
# Uses the machine's own python3 with its torch; inflame runs from this checkout
# (PYTHONPATH). INFLAME_HOME is set so that platformdirs is not needed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/inflame-device}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export INFLAME_HOME="${INFLAME_HOME:-/tmp/inflame-device-home}"
status=0
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available(), torch.cuda.device_count())"
  python3 -m pip list 2>/dev/null | grep -iE "^(typer|rich|numpy|torchvision|pillow|safetensors|pytest) "
} 2>&1 | tee "$out/machine.txt"
# each phase has a cap, so that a hang cannot take the whole lease (10 minutes a command)
timeout 400 python3 -m pytest tests_device -p no:cacheprovider -o addopts="" -q -ra \
  --timeout 240 --durations=10 2>&1 | tee "$out/device-tests.log" || status=1
if [[ "${1:-}" != "--no-benchmark" ]]; then
  timeout 170 python3 benchmarks/gpu_throughput.py --images 1024 --steps 40 \
    --json "$out/gpu_throughput.json" 2>&1 | tee "$out/gpu_throughput.log" || status=1
fi
exit "$status"
