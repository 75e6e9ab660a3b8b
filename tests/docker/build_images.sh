#!/usr/bin/env bash
# Builds the image twice from compose/Dockerfile, as users do: as shipped
# (agentcore-c:test) and with the Bedrock emulator (agentcore-c:test-emulator,
# WITH_EMULATOR=1), which the other container tests run. Prints their sizes.
. "$(dirname "$0")/lib.sh"
cd "$root"
for args in "$PROD_IMAGE" "$IMAGE --build-arg WITH_EMULATOR=1"; do
  set -- $args
  step "docker build -t $*"
  t0=$(now_ms)
  # --network host: apt inside the build reaches the mirror without NAT.
  docker build -q --network host -f compose/Dockerfile -t "$@" . >/dev/null 2>"$state/build.log" ||
    { tail -30 "$state/build.log" >&2; fail "docker build $*"; }
  echo "built $1 in $(( ($(now_ms) - t0) / 1000 )) s"
done
for i in "$PROD_IMAGE" "$IMAGE"; do
  bytes=$(docker image inspect -f '{{.Size}}' "$i")
  base=$(docker image inspect -f '{{.Size}}' debian:bookworm-slim)
  printf 'image %s: %d MB (%d MB above debian:bookworm-slim)\n' "$i" $((bytes / 1000000)) \
    $(((bytes - base) / 1000000))
done
# The image must carry every binary its modes start, and answer --version.
v=$(docker run --rm --network none "$PROD_IMAGE" agentcore-gateway --version)
[[ $v == "agentcore-gateway "* ]] || fail "agentcore-gateway --version: $v"
docker run --rm --network none "$PROD_IMAGE" sh -c '! command -v agentcore-bedrock-emulator' ||
  fail "the shipped image holds the emulator"
docker run --rm --network none "$IMAGE" sh -c 'command -v agentcore-bedrock-emulator' >/dev/null ||
  fail "the emulator image has no emulator"
