#!/bin/sh
# A command tool in shell: reads the tool input (JSON) on stdin, answers in
# plain text on stdout. Runs in the tool sandbox, like every command tool.
set -eu
jq -j '.text' > /tmp/text
printf 'lines=%s words=%s characters=%s\n' \
  "$(wc -l < /tmp/text | tr -d ' ')" "$(wc -w < /tmp/text | tr -d ' ')" \
  "$(wc -m < /tmp/text | tr -d ' ')"
