#!/usr/bin/env bash
# Fuzz the running service from its own OpenAPI schema, two ways; fails on any 5xx answer.
#   1. without credentials: every route (the admin ones answer 401/403 before reading the body);
#   2. with the admin token: the admin routes' real code (POST /train, /jobs, /feedback, /monitor/*, /alerts).
#
#   RAKUTEN_ADMIN_TOKEN=<admin token> bash benchmarks/fuzz.sh [URL] [EXAMPLES_PER_OPERATION]
#
# The token is the one the server was started with (RAKUTEN_ADMIN_TOKEN); without it only the first
# run happens and the script fails, so a green run always means both ways were fuzzed. Seed 7: a
# failure found once is found again. Point it at a disposable server: with the token the fuzzer may
# start training jobs and send feedback.
set -uo pipefail
url="${1:-http://127.0.0.1:3000}"
examples="${2:-60}"
token="${RAKUTEN_ADMIN_TOKEN:-}"
here="$(cd "$(dirname "$0")" && pwd)"
schemathesis="${SCHEMATHESIS:-$here/../.venv/bin/schemathesis}"
[ -x "$schemathesis" ] || schemathesis="$(command -v schemathesis || true)"
if [ -z "$schemathesis" ]; then
  echo "fuzz.sh: schemathesis not found (make setup installs it into .venv)" >&2
  exit 2
fi

fuzz() {
  "$schemathesis" run "$url/docs.json" --checks not_a_server_error --max-examples "$examples" --seed 7 --no-color "$@"
}

status=0
echo "== fuzz without credentials ($examples examples per operation)"
fuzz || status=1
if [ -z "$token" ]; then
  echo "fuzz.sh: RAKUTEN_ADMIN_TOKEN is not set: the admin routes were not fuzzed with credentials" >&2
  exit 2
fi
echo "== fuzz with the admin token ($examples examples per operation)"
fuzz -H "Authorization: Bearer $token" || status=1
exit "$status"
