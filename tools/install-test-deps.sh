#!/usr/bin/env bash
# What the tests need beyond `pip install -e .[dev]`: a current pip, and a headless Chromium
# to open `inflame eval`'s HTML report (tests/test_eval.py), installed with apt where it is
# missing and apt can be used (root, or sudo without a password); elsewhere it says what to
# install, and that test fails until then.
set -euo pipefail
# pip 23's resolver crashes on the dev extras' dependency set (InconsistentCandidate while
# backtracking over opentelemetry); a current pip resolves it
python -m pip install -q --upgrade "pip>=24"
# Azure ML's inference server, which runs `inflame deploy --target azure`'s scoring script in
# tests/test_deploy_azure.py: in a folder of its own, since it pins packages (OpenTelemetry)
# older than the ones inflame's extras need
server="$(dirname "$0")/../.test-deps/azureml-inference-server"
if [ ! -f "$server/.complete" ]; then
  rm -rf "$server"
  python -m pip install -q --target "$server" "azureml-inference-server-http==1.5.1"
  touch "$server/.complete"
fi
for browser in "${INFLAME_CHROMIUM:-}" chromium-headless-shell chromium google-chrome chromium-browser; do
  if [ -n "$browser" ] && command -v "$browser" > /dev/null; then
    exit 0
  fi
done
if command -v apt-get > /dev/null; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2> /dev/null; then sudo="sudo -n"; else sudo="none"; fi
  if [ "$sudo" != "none" ]; then
    $sudo apt-get install -y -q chromium-headless-shell > /dev/null \
      || { $sudo apt-get update -q > /dev/null && $sudo apt-get install -y -q chromium-headless-shell > /dev/null; }
    exit 0
  fi
fi
echo "install-test-deps: no headless Chromium, and apt cannot install one here; install" \
  "Chromium (or chromium-headless-shell) or set INFLAME_CHROMIUM to one, for tests/test_eval.py" >&2
