#!/usr/bin/env bash
# The first command of every inflame cloud job, run from the unpacked code bundle:
#     bash entry.sh [python -m inflame.job options]
# The job installs nothing (it must run without network access): inflame and the pure-Python
# packages it needs are in vendor/, and the image brings Python, torch, torchvision, numpy
# and pillow. No spec value is interpolated here; the job reads its settings from spec.toml
# and from the environment.
set -eu
cd "$(dirname "$0")"
# AWS Deep Learning Containers turn on CUDA forward compatibility in their own entrypoint,
# which a job that sets its entrypoint skips; do the same when their script is there.
if [ -f /usr/local/bin/start_cuda_compat.sh ]; then
    set +eu
    # shellcheck disable=SC1091
    . /usr/local/bin/start_cuda_compat.sh
    set -eu
fi
export PYTHONPATH="$PWD/vendor${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m inflame.job spec.toml "$@"
