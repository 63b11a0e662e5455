#!/usr/bin/env bash
# What the tests need beyond `pip install -e .[dev]`: a current pip, and a headless Chromium
# to open `inflame eval`'s HTML report (tests/test_eval.py), installed with apt where it is
# missing and apt can be used (root, or sudo without a password); elsewhere it says what to
# install, and that test fails until then.
set -euo pipefail
# pip 23's resolver crashes on the dev extras' dependency set (InconsistentCandidate while
# backtracking over opentelemetry); a current pip resolves it
python -m pip install -q --upgrade "pip>=24"
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
