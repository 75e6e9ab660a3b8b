#!/usr/bin/env bash
# Command 1: build if needed, then run the whole runtime under s6 supervision:
# gateway on 127.0.0.1:8080 (PORT, GATEWAY_HOST), one agent-worker and one
# tool-worker reached over unix sockets (build/run/sock, this user only).
#
# When the agent-worker's own credential chain finds credentials (it is asked:
# --check-credentials) it talks to real Bedrock. With none, it also starts the
# bundled Bedrock emulator and says so. BEDROCK_EMULATOR=1 forces
# the emulator, BEDROCK_EMULATOR=0 forbids it. Ctrl-C (or SIGTERM) stops all.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"

bin=$root/build/bin
scan=$root/build/run/svc
rm -rf "$scan"
mkdir -p "$scan"
cp -r "$root/compose/s6/." "$scan/"
export AGENTCORE_BIN=$bin

log() { # one JSON line, like the services' own logs
  printf '{"timestamp":"%s","level":"%s","message":"%s","logger":"agentcore.run"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" "$1" "$2" >&2
}

# Whether to use Bedrock is the agent-worker's own decision: it asks the same
# credential chain it signs with (environment, shared files and profiles,
# container credentials, the metadata service, a Secrets Manager secret, a
# Bedrock API key) and says which source won, never a value.
check=$("$bin/agentcore-agent-worker" --check-credentials 2>/dev/null) && found=1 || found=0
source=$(printf '%s' "$check" | sed -n 's/.*"source":"\([^"]*\)".*/\1/p')

use_emulator=0
case "${BEDROCK_EMULATOR:-auto}" in
  1|true|yes) use_emulator=1 ;;
  0|false|no) use_emulator=0 ;;
  *) [ "$found" = 0 ] && [ -z "${AWS_ENDPOINT_URL_BEDROCK_RUNTIME:-}${AWS_ENDPOINT_URL:-}" ] && use_emulator=1 ;;
esac

if [ "$use_emulator" = 1 ]; then
  port=${EMULATOR_PORT:-50090}
  mkdir -p "$scan/bedrock-emulator"
  cat > "$scan/bedrock-emulator/run" <<RUN
#!/bin/sh
# The bundled Bedrock emulator (scripted model), used because no AWS credentials are configured.
EMU_PORT=$port NOTIFY_FD=3 exec "\$AGENTCORE_BIN/agentcore-bedrock-emulator"
RUN
  echo 3 > "$scan/bedrock-emulator/notification-fd"
  chmod +x "$scan/bedrock-emulator/run"
  # The agent-worker signs with the emulator's own test key pair.
  export AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:$port
  export AWS_ACCESS_KEY_ID=AKIDEMULATOR0000000 AWS_SECRET_ACCESS_KEY=emulator-secret-key
  unset AWS_SESSION_TOKEN
  log WARN "no AWS credentials found by the agent-worker's chain: using the bundled Bedrock emulator at http://127.0.0.1:$port (scripted answers, not a real model); configure credentials as for any AWS SDK (environment, ~/.aws, container or instance role) to use Bedrock"
else
  if [ "$found" = 1 ]; then
    log INFO "AWS credentials from ${source:-the credential chain}"
  else
    log WARN "no AWS credentials found by the agent-worker's chain ($(printf '%s' "$check" | sed -n 's/.*"details":"\([^"]*\)".*/\1/p')): model calls will fail until some are configured"
  fi
  log INFO "using Bedrock in ${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}} with model ${MODEL_ID:-us.anthropic.claude-sonnet-4-20250514-v1:0}"
fi

# Internal gRPC over unix sockets in a directory only this user may enter
# (the sockets themselves are 0600): no other user of the machine, and no
# tool in its sandbox, can call the workers.
sock=$root/build/run/sock
if [ ${#sock} -gt 90 ]; then # a socket path must fit in 108 bytes
  sock=$(mktemp -d "${TMPDIR:-/tmp}/agentcore-sock.XXXXXX")
else
  rm -rf "$sock"
  mkdir -m 0700 -p "$sock"
fi
export AGENT_WORKER_LISTEN=unix:$sock/agent.sock AGENT_WORKER_ADDR=unix:$sock/agent.sock
export TOOL_WORKER_LISTEN=unix:$sock/tool.sock TOOL_WORKERS=unix:$sock/tool.sock

# On a laptop the gateway listens on loopback only: it holds the user's AWS keys
# and asks for no authentication. A container sets GATEWAY_HOST=0.0.0.0 itself.
export GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1}
log INFO "starting gateway on ${GATEWAY_HOST}:${PORT:-8080} (GATEWAY_HOST=0.0.0.0 to listen on every interface), agent-worker and tool-worker under s6-svscan ($scan)"
exec s6-svscan "$scan"
