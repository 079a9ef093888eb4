#!/usr/bin/env bash
# Runs a Python test with Debian's python3 (pymemcache lives there; a
# python3 earlier on PATH may not see it), its directory on PYTHONPATH.
set -euo pipefail
script=$1
shift
export PYTHONPATH="$(cd "$(dirname "$script")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3 -u "$script" "$@"
