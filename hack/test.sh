#!/usr/bin/env bash
# The one test command: static checks (ruff, mypy strict, import-linter) and every test (unit,
# handlers, e2e on the real control plane), from nothing on a fresh machine or from caches.
set -euo pipefail
source "$(dirname "$0")/deps.sh"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
start=$SECONDS
# One command per line: `set -e` does not stop on a failure inside an && list.
echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict)"
mypy
echo "== import contracts"
lint-imports --no-cache
echo "== pytest"
set +e
pytest "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
echo "== done in $((SECONDS - start))s (exit $code)"
exit $code
