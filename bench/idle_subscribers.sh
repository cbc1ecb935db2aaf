#!/usr/bin/env bash
# Starts `stepwise serve` (the binary given, debug or release) on a fresh SQLite file, runs
# bench/idle_subscribers.mjs against it with the remaining arguments, and stops it.
#   bench/idle_subscribers.sh target/debug/stepwise --subscribers 2000 [--distinct]
set -euo pipefail
bin=$(realpath "$1"); shift
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
ulimit -n 65536 2>/dev/null || true
JWT_SECRET=bench-secret-bench-secret-bench-secret \
STEPWISE_SIGN_IN_ATTEMPTS_PER_ADDRESS=0 STEPWISE_SIGN_IN_ATTEMPTS_PER_EMAIL=0 \
STEPWISE_WS_MAX_CONNECTIONS_PER_USER=1000000 \
  "$bin" serve --listen "127.0.0.1:$port" --database-url "sqlite://$dir/bench.db" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
node "$here/idle_subscribers.mjs" --url "http://127.0.0.1:$port" --pid "$server" "$@"
