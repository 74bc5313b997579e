#!/usr/bin/env bash
# Start a task on a running hub and follow it until it ends.
#
#   examples/curl.sh [HUB_URL]
#
# HUB_URL is where the hub is mounted: http://127.0.0.1:8000 (the default, as
# `sse-tasks serve` runs it) or e.g. http://127.0.0.1:8000/jobs. The links in the
# answer are root-relative ("/jobs/tasks/<id>/events"), so they are resolved against
# HUB_URL, not appended to it.
set -euo pipefail
hub=${1:-http://127.0.0.1:8000}
hub=${hub%/}
# --fail-with-body: an error answer ({"error": {"code", "message"}}) goes to stderr, exit 1.
answer=$(curl -sS --fail-with-body -X POST "$hub/tasks" -H 'content-type: application/json' \
  -d '{"name":"count","params":{"n":5}}') || { echo "$answer" >&2; exit 1; }
events=$(python3 -c 'import json, sys, urllib.parse
print(urllib.parse.urljoin(sys.argv[1] + "/", json.loads(sys.argv[2])["links"]["events"]))' "$hub" "$answer")
curl -sSN "$events"   # exits by itself after the terminal event
