#!/usr/bin/env bash
# Command 1: build if needed, then run the whole runtime under s6 supervision:
# gateway on 127.0.0.1:8080 (PORT, GATEWAY_HOST), one agent-worker and one
# tool-worker reached over unix sockets (a private directory under build/run).
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
  [ "$found" = 0 ] && log WARN "no AWS credentials found by the agent-worker's chain: starting the bundled Bedrock emulator; configure credentials as for any AWS SDK (environment, ~/.aws, container or instance role) to use Bedrock"
  export BEDROCK_EMULATOR=1 # compose/entrypoint.sh adds it as a service and says so
else
  export BEDROCK_EMULATOR=0
  if [ "$found" = 1 ]; then
    log INFO "AWS credentials from ${source:-the credential chain}"
  else
    log WARN "no AWS credentials found by the agent-worker's chain ($(printf '%s' "$check" | sed -n 's/.*"details":"\([^"]*\)".*/\1/p')): model calls will fail until some are configured"
  fi
  log INFO "using Bedrock in ${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}} with model ${MODEL_ID:-us.anthropic.claude-sonnet-4-20250514-v1:0}"
fi

# On a laptop the gateway listens on loopback only: it holds the user's AWS keys
# and asks for no authentication. A container sets GATEWAY_HOST=0.0.0.0 itself.
export GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1}
# The same start as the container's (compose/entrypoint.sh): s6's scan
# directory and the workers' unix sockets (this user only) in a private
# directory under build/run.
mkdir -p "$root/build/run"
rm -rf "$root/build/run"/agentcore.* "$root/build/run/svc" "$root/build/run/sock"
export AGENTCORE_BIN=$bin AGENTCORE_SVC=$root/compose/s6 AGENTCORE_RUN_DIR=$root/build/run
exec "$root/compose/entrypoint.sh"
