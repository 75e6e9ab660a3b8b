#!/usr/bin/env bash
# Single-container mode, as AgentCore runs it: one container, s6 supervising
# the gateway, the agent-worker and the tool-worker (and the emulator,
# BEDROCK_EMULATOR=1). Shows: a tool round trip through all three processes;
# a killed tool-worker and a killed agent-worker restarted by s6 while /ping
# stays 200, and no invocation failing after the restart; `docker stop` with an
# invocation in flight exits 0 within AgentCore's 15 s; the image runs as uid
# 4242:0 and with a read-only root. Prints cold-start figures.
. "$(dirname "$0")/lib.sh"
trap cleanup_docker EXIT
CALC='[[tool:calculator {"expression":"6*7"}]]'
docker network create --label "$RUN_ID" "$RUN_ID" >/dev/null
# What the tool sandbox needs (compose/Dockerfile says why).
SANDBOX=(--security-opt seccomp=unconfined --security-opt systempaths=unconfined
  --security-opt apparmor=unconfined)

# Creates (not starts) a container of $IMAGE on the test network; prints its id.
create() {
  docker create --label "$RUN_ID" --network "$RUN_ID" "${SANDBOX[@]}" -e BEDROCK_EMULATOR=1 \
    -e LOG_LEVEL=INFO "$@" "$IMAGE"
}

# Starts $1 and waits for /ping; sets URL. Prints the cold-start figures.
start_and_measure() {
  local c=$1 t0 tping tinv
  t0=$(now_ms)
  docker start "$c" >/dev/null
  URL=http://$(container_ip "$c"):8080
  wait_ping "$URL" 30 >/dev/null || { docker logs "$c" 2>&1 | tail -20; fail "no /ping 200 within 30 s"; }
  tping=$(($(now_ms) - t0))
  expect_answer "$URL" "$CALC" "cold-start-session-00000000000000000001" 42
  tinv=$(($(now_ms) - t0))
  echo "cold start ($2): docker start -> first /ping 200 in $tping ms, first invocation (tool round trip) 200 in $tinv ms"
}

# s6's service directory inside container $1.
svc_dir() { docker exec "$1" sh -c 'ls -d /run/agentcore.*/svc | head -n1'; }

# Kills process $2 (a service name) in container $1 with SIGKILL, and shows
# that s6 restarts it, /ping answering 200 all along, and invocations after.
kill_and_recover() {
  local c=$1 name=$2 svc pid newpid bad=0 n=0 deadline stop=$state/ping-stop.$$
  svc=$(svc_dir "$c")
  pid=$(docker exec "$c" s6-svstat -o pid "$svc/$name")
  [ "$pid" -gt 1 ] || fail "no pid for $name"
  rm -f "$stop"
  # /ping every 20 ms while the process is down and restarting (bounded).
  (
    for i in $(seq 1 1000); do
      [ -e "$stop" ] && break
      s=$(ping_status "$URL"); [ "$s" = 200 ] || echo "$s"
      sleep 0.02
    done
  ) >"$state/ping-$name.$$" &
  local watcher=$!
  docker exec "$c" sh -c "kill -KILL $pid"
  deadline=$(($(now_ms) + 20000))
  while :; do # s6 restarts it (1 s apart at most once a second): bounded wait for up + ready
    newpid=$(docker exec "$c" s6-svstat -o pid,ready "$svc/$name")
    [ "${newpid% *}" != "$pid" ] && [ "${newpid% *}" != -1 ] && [ "${newpid#* }" = true ] && break
    [ "$(now_ms)" -lt "$deadline" ] || fail "s6 did not restart $name within 20 s ($newpid)"
    sleep 0.05
  done
  for i in 1 2 3; do
    expect_answer "$URL" "$CALC" "after-restart-session-0000000000000000$i" 42
  done
  touch "$stop"; wait "$watcher"; rm -f "$stop"
  n=$(wc -l <"$state/ping-$name.$$")
  [ "$n" = 0 ] || fail "/ping answered other than 200 while $name restarted: $(sort | uniq -c <"$state/ping-$name.$$")"
  rm -f "$state/ping-$name.$$"
  echo "$name: killed pid $pid, s6 restarted it as pid ${newpid% *}; /ping stayed 200, 3 invocations after it answered 42"
}

step "single container: tool round trip, cold start (emulator under s6)"
c=$(create --name "$RUN_ID-single")
start_and_measure "$c" "uid 1000"
# All three processes (and the emulator) are under s6, logging JSON lines.
svc=$(svc_dir "$c")
for s in gateway agent-worker tool-worker bedrock-emulator; do
  [ "$(docker exec "$c" s6-svstat -o up,ready "$svc/$s")" = "true true" ] || fail "$s not up and ready"
done
has_log "$c" '"message":"tool executed".*"tool":"calculator"' ||
  fail "no tool-worker log line for the calculator call"
if [ "$(grep -vc '^{.*}$' "$state/logs.$$")" != 0 ]; then
  grep -v '^{.*}$' "$state/logs.$$" | head -5 >&2 || true
  fail "log lines that are not JSON objects"
fi

step "single container: s6 restarts killed workers"
kill_and_recover "$c" tool-worker
kill_and_recover "$c" agent-worker

step "single container: docker stop with an invocation in flight"
# Here the model is elsewhere, as Bedrock is: an emulator in its own container.
# A streamed invocation gets one text delta, then the model goes silent for
# 30 s: the invocation is in flight when the stop comes, the gateway and the
# agent-worker give it SHUTDOWN_GRACE_MS (8 s), then cancel it cleanly.
emu=$(docker run -d --label "$RUN_ID" --network "$RUN_ID" -e EMU_HOST=0.0.0.0 -e EMU_PORT=50090 \
  "$IMAGE" agentcore-bedrock-emulator)
c=$(docker create --label "$RUN_ID" --network "$RUN_ID" "${SANDBOX[@]}" \
  -e AWS_ENDPOINT_URL_BEDROCK_RUNTIME="http://$(container_ip "$emu"):50090" \
  -e AWS_ACCESS_KEY_ID=AKIDEMULATOR0000000 -e AWS_SECRET_ACCESS_KEY=emulator-secret-key "$IMAGE")
start_and_measure "$c" "uid 1000, model in another container"
rm -f "$state/inflight.$$"
curl -s -N -m 60 -H 'Content-Type: application/json' -H 'Accept: text/event-stream' \
  -H "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id: in-flight-session-0000000000000000001" \
  -d '{"prompt":"[[pause:30000]]"}' "$URL/invocations" >"$state/inflight.$$" &
inflight=$!
deadline=$(($(now_ms) + 10000))
until grep -q '^data:' "$state/inflight.$$" 2>/dev/null; do
  [ "$(now_ms)" -lt "$deadline" ] || fail "no event of the streamed invocation within 10 s"
  sleep 0.02
done
t0=$(now_ms)
docker stop -t 15 "$c" >/dev/null
took=$(($(now_ms) - t0))
code=$(docker inspect -f '{{.State.ExitCode}}' "$c")
wait "$inflight" || true
last=$(grep '^data:' "$state/inflight.$$" | tail -n1 | cut -c1-300)
rm -f "$state/inflight.$$"
echo "docker stop with an invocation in flight: exit code $code after $took ms; the stream's last event: $last"
[ "$code" = 0 ] || { docker logs "$c" 2>&1 | tail -20; fail "exit code $code"; }
[ "$took" -lt 15000 ] || fail "docker stop took $took ms (AgentCore allows 15 s)"
grep -q 'ShuttingDown' <<<"$last" || fail "the in-flight stream did not end with the shutting-down error event"

step "single container: any uid, read-only root"
# Docker's --tmpfs is noexec: s6's scan directory holds only links.
c=$(create --name "$RUN_ID-ro" --user 4242:0 --read-only --tmpfs /run)
start_and_measure "$c" "uid 4242:0, --read-only"
[ "$(docker exec "$c" id -u)" = 4242 ] || fail "not uid 4242"
expect_answer "$URL" '[[tool:calculator {"expression":"2+3"}]]' "ro-session-00000000000000000000000001" 5
docker stop -t 15 "$c" >/dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' "$c")" = 0 ] || fail "read-only container: exit code not 0"
echo "PASS"
