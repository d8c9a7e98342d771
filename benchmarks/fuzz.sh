#!/usr/bin/env bash
# Fuzz the running service from its own OpenAPI schema; fails on any 5xx answer.
#   bash benchmarks/fuzz.sh [URL] [EXAMPLES_PER_OPERATION]
set -euo pipefail
url="${1:-http://127.0.0.1:3000}"
examples="${2:-60}"
exec "$(dirname "$0")/../.venv/bin/schemathesis" run "$url/docs.json" \
  --checks not_a_server_error --max-examples "$examples" --seed 1 --no-color
