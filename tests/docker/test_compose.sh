#!/usr/bin/env bash
# Multi-container mode with docker-compose (Debian's 1.29, or Compose v2 when
# that is what the machine has): compose/docker-compose.yml plus the emulator
# override, with three tool-worker replicas and two agent-workers. Shows: the
# health-gated start; tool calls spread over all three tool-workers, and go
# on when one is removed; the tool sandbox (namespaces, no /proc); each session
# stays on its agent-worker (its turns continue) though both serve sessions,
# and moves, with a log line, when its agent-worker is gone.
. "$(dirname "$0")/lib.sh"
cd "$root"
if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
else COMPOSE=(docker compose); fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AGENTCORE_IMAGE=$IMAGE AGENTCORE_PORT=127.0.0.1:$port
compose() {
  "${COMPOSE[@]}" -p "$RUN_ID" -f compose/docker-compose.yml -f compose/docker-compose.emulator.yml "$@"
}
cleanup() {
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -f "$state/logs.$$"
}
trap cleanup EXIT
URL=http://127.0.0.1:$port
CALC='[[tool:calculator {"expression":"6*7"}]]'
ids() { docker ps -q --filter "label=com.docker.compose.project=$RUN_ID" --filter "label=com.docker.compose.service=$1"; }

step "compose up: 3 tool-workers, 2 agent-workers, the emulator"
t0=$(now_ms)
# up returns once every service it starts is running, each after what it
# depends on is healthy (the binaries' own --healthcheck).
compose up -d --no-build --scale tool-worker=3 --scale agent-worker=2 >"$state/compose-up.$$" 2>&1 ||
  { cat "$state/compose-up.$$" >&2; compose logs --no-color | tail -40 >&2; fail "compose up"; }
wait_ping "$URL" 60 >/dev/null || { compose logs --no-color | tail -40 >&2; fail "no /ping 200"; }
echo "compose up -> first /ping 200 in $(($(now_ms) - t0)) ms (health-gated: tool-workers, then agent-workers, then the gateway)"
rm -f "$state/compose-up.$$"
[ "$(ids tool-worker | wc -l)" = 3 ] || fail "not 3 tool-workers"
[ "$(ids agent-worker | wc -l)" = 2 ] || fail "not 2 agent-workers"
for s in gateway agent-worker tool-worker; do
  for id in $(ids $s); do
    h=$(docker inspect -f '{{.State.Health.Status}}' "$id")
    [ "$h" = healthy ] || [ "$h" = starting ] || fail "$s $id is $h"
  done
done

step "the tool sandbox under compose"
# Compose cannot unmask Docker's /proc: every namespace, no /proc, said so.
for id in $(ids tool-worker); do
  has_log "$id" '"message":"tool sandbox".*"isolation":"namespaces".*no /proc for tools' ||
    fail "tool-worker $id: $(docker logs "$id" 2>&1 | grep '"tool sandbox"')"
done
expect_answer "$URL" '[[tool:shell {"command":"echo sandboxed; ls -A /proc | wc -l"}]]' \
  "sandbox-session-00000000000000000000001" "sandboxed"
echo "tool-workers: namespaces without /proc; a shell tool ran in the sandbox"

step "tool calls spread over the three tool-workers"
for i in $(seq -w 1 12); do
  expect_answer "$URL" "$CALC" "spread-session-000000000000000000000$i" 42
done
for id in $(ids tool-worker); do
  n=$(docker logs "$id" 2>&1 | grep -c '"message":"tool executed"' || true)
  echo "tool-worker $id: $n tool calls"
  [ "$n" -gt 0 ] || fail "tool-worker $id ran no tool call"
done

step "a tool-worker removed: the calls go on"
gone=$(ids tool-worker | sed -n 1p)
docker rm -f "$gone" >/dev/null
for i in $(seq -w 1 9); do
  expect_answer "$URL" "$CALC" "after-removal-session-0000000000000000$i" 42
done
echo "removed tool-worker $gone; 9 invocations after it answered 42"

step "sessions stay on their agent-worker"
for i in $(seq -w 1 8); do
  expect_answer "$URL" "first turn $i" "affinity-session-000000000000000000$i" "first turn $i"
done
for i in $(seq -w 8 -1 1); do # reverse order: round-robin would swap them
  expect_answer "$URL" '[[recall]]' "affinity-session-000000000000000000$i" "first turn $i"
done
for id in $(ids agent-worker); do
  n=$(docker logs "$id" 2>&1 | grep -o 'affinity-session-[0-9]*' | sort -u | wc -l)
  echo "agent-worker $id: $n of 8 sessions"
  [ "$n" -gt 0 ] || fail "agent-worker $id served no session"
done
gw=$(ids gateway)
has_log "$gw" '"agent-worker:50051 resolves to [^,]*,[^,"]*"' ||
  fail "the gateway did not log the two agent-worker addresses: $(docker logs "$gw" 2>&1 | grep -E 'resolves|unreachable')"

step "an agent-worker removed: its sessions go on on the other"
gone=$(ids agent-worker | sed -n 1p)
moved=""
for i in $(seq -w 1 8); do
  has_log "$gone" "affinity-session-000000000000000000$i" && moved=$i && break
done
[ -n "$moved" ] || fail "no session on agent-worker $gone"
docker rm -f "$gone" >/dev/null
# The first call may still be sent to the removed worker's address before the
# gateway sees it fail: each try is answered, at most 20.
for try in $(seq 1 20); do
  out=$(invoke "$URL" "after the move" "affinity-session-000000000000000000$moved")
  [ "${out%% *}" = 200 ] && break
done
[ "${out%% *}" = 200 ] || fail "session $moved after its worker went: $out"
deadline=$(($(now_ms) + 10000))
until has_log "$gw" 'is unreachable: this session continues on|"agent-worker:50051 resolves to [^,"]*"'; do
  [ "$(now_ms)" -lt "$deadline" ] || fail "the gateway said nothing about the lost agent-worker"
  sleep 0.1
done
echo "removed agent-worker $gone; session $moved answered 200 on the other after $try tries; the gateway logged: $(grep -E 'is unreachable|resolves to' "$state/logs.$$" | tail -n1 | cut -c1-200)"
echo "PASS"
