#!/usr/bin/env bash
# Start a task on a running `sse-tasks serve` and follow it until it ends.
set -euo pipefail
base=${1:-http://127.0.0.1:8000}
events=$(curl -s -X POST "$base/tasks" -H 'content-type: application/json' \
  -d '{"name":"count","params":{"n":5}}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["links"]["events"])')
curl -sN "$base$events"   # exits by itself after the terminal event
