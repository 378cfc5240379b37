#!/usr/bin/env bash
# A local Qdrant cluster on loopback, for trying aisle's Qdrant backend by hand (the tests start
# their own nodes). Each node gets its own ports and storage folder and runs in the background;
# its PID is kept in DIR/nI/pid, and `stop` kills those PIDs.
#
#   scripts/qdrant-cluster.sh start [NODES] [DIR]   # default 3 nodes in /tmp/aisle-qdrant
#   scripts/qdrant-cluster.sh stop [DIR]
#   scripts/qdrant-cluster.sh kill I [DIR]          # SIGKILL node I (1-based)
#   scripts/qdrant-cluster.sh restart I [DIR]       # start node I again on its storage
#
# Node I listens on REST 6333+10(I-1), gRPC 6334+10(I-1) and peer-to-peer 6335+10(I-1); BASE
# moves the first port. `start` prints the --url list for `aisle ... --backend qdrant`.
# QDRANT names the binary [default: ../shared/bin/qdrant beside this checkout].
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
qdrant="${QDRANT:-$here/../shared/bin/qdrant}"
base="${BASE:-6333}"
cmd="${1:-}"

ports() { # I -> http grpc p2p
  local off=$(( ($1 - 1) * 10 ))
  echo "$((base + off)) $((base + off + 1)) $((base + off + 2))"
}

launch() { # I DIR NODES
  local i=$1 dir=$2
  read -r http grpc p2p < <(ports "$i")
  read -r _ _ first < <(ports 1)
  local node="$dir/n$i"
  mkdir -p "$node"
  local extra=()
  if (( i > 1 )); then extra=(--bootstrap "http://127.0.0.1:$first"); fi
  (
    cd "$node"
    QDRANT__CLUSTER__ENABLED=true QDRANT__CLUSTER__P2P__PORT="$p2p" \
    QDRANT__SERVICE__HTTP_PORT="$http" QDRANT__SERVICE__GRPC_PORT="$grpc" \
    QDRANT__STORAGE__STORAGE_PATH="$node/storage" QDRANT__STORAGE__SNAPSHOTS_PATH="$node/snapshots" \
    QDRANT__TELEMETRY_DISABLED=true QDRANT__LOG_LEVEL=WARN \
      nohup "$qdrant" --uri "http://127.0.0.1:$p2p" "${extra[@]}" >"$node/qdrant.log" 2>&1 &
    echo $! >"$node/pid"
  )
  for _ in $(seq 600); do
    if curl -fsS "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "node $i (http://127.0.0.1:$http) not ready after 60 s; see $node/qdrant.log" >&2
  return 1
}

case "$cmd" in
  start)
    nodes="${2:-3}"
    dir="${3:-/tmp/aisle-qdrant}"
    [ -x "$qdrant" ] || { echo "no Qdrant binary at $qdrant (set QDRANT=...)" >&2; exit 1; }
    urls=()
    for i in $(seq "$nodes"); do
      launch "$i" "$dir"
      read -r http _ _ < <(ports "$i")
      urls+=("http://127.0.0.1:$http")
    done
    echo "$nodes node(s) up in $dir"
    (IFS=,; echo "--backend qdrant --url ${urls[*]}")
    ;;
  stop)
    dir="${2:-/tmp/aisle-qdrant}"
    for pidfile in "$dir"/n*/pid; do
      [ -f "$pidfile" ] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
    echo "stopped the nodes in $dir"
    ;;
  kill)
    dir="${3:-/tmp/aisle-qdrant}"
    kill -9 "$(cat "$dir/n$2/pid")"
    rm -f "$dir/n$2/pid"
    echo "killed node $2"
    ;;
  restart)
    dir="${3:-/tmp/aisle-qdrant}"
    launch "$2" "$dir"
    echo "node $2 is back"
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
