# Shared by the container tests (sourced). Every wait here has a deadline;
# every check that fails says what it saw and exits non-zero.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${AC_DOCKER_STATE:-$root/build-docker}
[ -f "$state/env" ] || { echo "no engine: run tests/docker/dockerd.sh start" >&2; exit 1; }
. "$state/env"
export DOCKER_HOST
IMAGE=${AC_TEST_IMAGE:-agentcore-c:test-emulator}
PROD_IMAGE=${AC_PROD_IMAGE:-agentcore-c:test}
# Everything a test creates carries this label, so its cleanup finds it all.
RUN_ID=agentcore-test-$$
step() { echo "==> $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# HTTP status of GET $1/ping ("000" when nothing answers).
ping_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1/ping" || true; }

# Waits until $1/ping answers 200, $2 seconds at most; prints the ms it took.
wait_ping() {
  local t0 deadline
  t0=$(now_ms); deadline=$((t0 + $2 * 1000))
  until [ "$(ping_status "$1")" = 200 ]; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.01
  done
  echo $(($(now_ms) - t0))
}

# POST $1/invocations {"prompt":$2} with session $3; prints "STATUS BODY".
invoke() {
  local body
  body=$(jq -cn --arg p "$2" '{prompt: $p}')
  curl -s -m 60 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    -H "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: $3" -d "$body" "$1/invocations" |
    { body=$(cat); echo "${body##*$'\n'} ${body%$'\n'*}"; }
}

# Fails unless invoking $2 on $1 (session $3) answers 200 with $4 in the response.
expect_answer() {
  local out
  out=$(invoke "$1" "$2" "$3")
  [ "${out%% *}" = 200 ] || fail "$2 -> $out"
  grep -qF -- "$4" <<<"${out#* }" || fail "$2 -> $out; want '$4'"
}

# 0 when a log line of container $1 matches the extended regex $2. (The
# logs go to a file first: with pipefail, grep -q leaving early would fail
# the pipeline when docker logs gets SIGPIPE.)
has_log() {
  docker logs "$1" >"$state/logs.$$" 2>&1 || return 1
  grep -Eq -- "$2" "$state/logs.$$"
}

container_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }

cleanup_docker() {
  docker ps -aq --filter "label=$RUN_ID" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls -q --filter "label=$RUN_ID" | xargs -r docker network rm >/dev/null 2>&1 || true
  docker volume ls -q --filter "label=$RUN_ID" | xargs -r docker volume rm >/dev/null 2>&1 || true
  rm -f "$state/logs.$$"
}
