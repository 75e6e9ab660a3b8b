#!/usr/bin/env bash
# Installs the Debian packages the build, the runtime and the tests need.
# Idempotent and silent when everything is already there; both README commands run it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  gcc make cmake pkg-config
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler   # gRPC core C API + protobuf-c
  libcurl4-openssl-dev libjansson-dev libssl-dev      # Bedrock client, JSON, SigV4
  zlib1g-dev                                          # CRC32 of event-stream frames
  libmicrohttpd-dev                                   # the HTTP/1.1 server
  libwslay-dev                                        # WebSocket framing for /ws
  libuv1-dev                                          # the agent-worker's event loop
  nghttp2-proxy openssl                               # nghttpx: TLS + HTTP/2 front in the e2e tests
  libcmocka-dev                                       # unit and e2e tests
  protobuf-compiler                                   # protoc --decode: the OTLP test's independent decoder
  prometheus                                          # the metrics test scrapes /metrics with it
  s6                                                  # process supervision (single-container mode)
  bubblewrap libseccomp-dev                           # the tool sandbox: namespaces, syscall filter
  python3 jq                                          # the example command tools (examples/tools)
  tzdata ca-certificates curl
  clang libclang-rt-14-dev                            # libFuzzer targets
)

# Node.js runs the MCP server of the tests; a machine that has node and npm
# (from Debian or NodeSource) keeps them.
command -v npm >/dev/null && command -v node >/dev/null || packages+=(nodejs npm)

# The third-party servers the tests run, each pinned by its package-lock.json:
# <dir under tests/> <a file that exists once installed> <what it is>.
npm_servers() {
  local dir marker what
  for spec in "mcp:node_modules/@modelcontextprotocol/server-filesystem/package.json:the test MCP servers" \
              "s3:node_modules/s3rver/package.json:s3rver (the session store tests)"; do
    IFS=: read -r dir marker what <<<"$spec"
    [ -f "$root/tests/$dir/$marker" ] && continue
    command -v npm >/dev/null || { echo "setup: npm is missing (install nodejs and npm)" >&2; return 1; }
    echo "setup: installing $what with npm ci" >&2
    (cd "$root/tests/$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  done
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  npm_servers
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
npm_servers
