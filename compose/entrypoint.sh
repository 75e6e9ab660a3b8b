#!/bin/sh
# The single container's start (the image's CMD), shared with scripts/run.sh:
# s6-svscan supervising the gateway, the agent-worker and the tool-worker.
#
# The image's files may be read-only (docker run --read-only) and the uid any
# (--user 4242:0, as OpenShift runs images), so everything that is written
# lives in a private directory (0700, made here) under the first writable of
# $AGENTCORE_RUN_DIR, /run, /tmp: s6's scan directory and the unix sockets of
# the internal gRPC calls, which only this uid can then reach. The scan
# directory's files are links to the image's service definitions, so a tmpfs
# mounted noexec (Docker's --tmpfs default) serves. BEDROCK_EMULATOR=1 adds
# the bundled Bedrock emulator as a fourth service when its binary is there.
#
#   AGENTCORE_BIN  binaries (default /usr/local/bin)
#   AGENTCORE_SVC  service definitions (default /etc/agentcore/svc)
set -eu
bin=${AGENTCORE_BIN:-/usr/local/bin}
svc=${AGENTCORE_SVC:-/etc/agentcore/svc}

log() { # one JSON line, like the services' own logs
  printf '{"timestamp":"%s","level":"%s","message":"%s","logger":"agentcore.entrypoint"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" "$1" "$2" >&2
}

case "${BEDROCK_EMULATOR:-0}" in 1|true|yes) emulator=1 ;; *) emulator=0 ;; esac
if [ "$emulator" = 1 ] && [ ! -x "$bin/agentcore-bedrock-emulator" ]; then
  log ERROR "BEDROCK_EMULATOR=1 but $bin/agentcore-bedrock-emulator is not there (build the image with --build-arg WITH_EMULATOR=1)"
  exit 1
fi

base=""
for d in "${AGENTCORE_RUN_DIR:-}" /run /tmp; do
  if [ -n "$d" ] && [ -d "$d" ] && [ -w "$d" ]; then base=$d; break; fi
done
if [ -z "$base" ]; then
  log ERROR "no writable directory for s6 and the sockets: set AGENTCORE_RUN_DIR or mount a tmpfs on /run"
  exit 1
fi
umask 077
run=$(mktemp -d "$base/agentcore.XXXXXX")
if [ ${#run} -gt 80 ]; then # a unix socket path must fit in 108 bytes
  rmdir "$run"
  run=$(mktemp -d /tmp/agentcore.XXXXXX)
fi
mkdir "$run/sock" "$run/svc"
for d in "$svc"/*/; do
  name=$(basename "$d")
  [ "$name" != bedrock-emulator ] || [ "$emulator" = 1 ] || continue
  mkdir "$run/svc/$name"
  for f in "$d"*; do ln -s "$f" "$run/svc/$name/"; done
done
umask 022

# Internal calls over unix sockets unless told otherwise.
export AGENTCORE_BIN="$bin"
export AGENT_WORKER_LISTEN="${AGENT_WORKER_LISTEN:-unix:$run/sock/agent.sock}"
export AGENT_WORKER_ADDR="${AGENT_WORKER_ADDR:-unix:$run/sock/agent.sock}"
export TOOL_WORKER_LISTEN="${TOOL_WORKER_LISTEN:-unix:$run/sock/tool.sock}"
export TOOL_WORKERS="${TOOL_WORKERS:-unix:$run/sock/tool.sock}"
# Tool workspaces: the image sets a volume path; elsewhere, or when that is
# not writable (a read-only root without a volume there), this uid's own.
if [ -n "${TOOL_WORKSPACE_DIR:-}" ] && [ ! -w "$TOOL_WORKSPACE_DIR" ]; then
  log WARN "TOOL_WORKSPACE_DIR $TOOL_WORKSPACE_DIR is not writable: session workspaces go to $run/workspaces (mount a volume there to keep them)"
  TOOL_WORKSPACE_DIR=""
fi
export TOOL_WORKSPACE_DIR="${TOOL_WORKSPACE_DIR:-$run/workspaces}"

if [ "$emulator" = 1 ]; then
  export EMULATOR_PORT="${EMULATOR_PORT:-50090}"
  # The agent-worker signs with the emulator's own test key pair.
  export AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:$EMULATOR_PORT
  export AWS_ACCESS_KEY_ID=AKIDEMULATOR0000000 AWS_SECRET_ACCESS_KEY=emulator-secret-key
  unset AWS_SESSION_TOKEN
  log WARN "BEDROCK_EMULATOR=1: using the bundled Bedrock emulator at http://127.0.0.1:$EMULATOR_PORT (scripted answers, not a real model)"
fi

log INFO "starting gateway on ${GATEWAY_HOST:-0.0.0.0}:${PORT:-8080}, agent-worker and tool-worker under s6-svscan ($run/svc)"
exec s6-svscan "$run/svc"
