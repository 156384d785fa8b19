#!/usr/bin/env bash
# Runs etcd-bench against a 3-node cluster of this repo's server and against a
# 3-node cluster of the real etcd 3.4, one after the other, each freshly
# started in its own temp dir on loopback only. Every workload runs once
# against the leader's client URL and once against a follower's, then both
# tables and a ratio line per (role, workload) are printed.
#
# usage: bench/compare_cluster.sh [etcd-bench options] [WORKLOAD...]
#   default workloads: put-v2-64 get-v2-64 qget-v2-64
#   default options:   --requests 10000 (unless --requests is given)
#   e.g.   bench/compare_cluster.sh --requests 5000 put-v2-64
#
# environment:
#   OURS_BIN    our server      (default: <repo>/target/release/etcd; never built here)
#   BENCH_BIN   the bench tool  (default: <repo>/target/release/etcd-bench; never built here)
#   ETCD_BIN    etcd 3.4        (default: `etcd` on PATH)
#   SKIP_OURS=1 bench etcd 3.4 only;  SKIP_ETCD=1 bench ours only
#   KEEP_TMP=1  keep the temp dir (data dirs, server logs, bench output)
#
# Ports: six free 127.0.0.1 ports picked at random in 20000-32000 per cluster.
# Exit status: 0 when every bench run succeeded, 1 otherwise.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OURS_BIN=${OURS_BIN:-$REPO_ROOT/target/release/etcd}
BENCH_BIN=${BENCH_BIN:-$REPO_ROOT/target/release/etcd-bench}
ETCD_BIN=${ETCD_BIN:-}
SKIP_OURS=${SKIP_OURS:-0}
SKIP_ETCD=${SKIP_ETCD:-0}
KEEP_TMP=${KEEP_TMP:-0}
READY_TIMEOUT=90 # seconds to wait for a cluster to be ready

log() { printf 'compare_cluster: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---- arguments: options go to etcd-bench, the rest are workload names ------
bench_opts=()
workloads=()
have_requests=0
while (($#)); do
    case $1 in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    --json) die "--json is not supported here (the tables are parsed)" ;;
    --*=*)
        [[ $1 == --requests=* ]] && have_requests=1
        bench_opts+=("$1")
        ;;
    --*)
        (($# >= 2)) || die "$1 needs a value"
        [[ $1 == --requests ]] && have_requests=1
        bench_opts+=("$1" "$2")
        shift
        ;;
    *) workloads+=("$1") ;;
    esac
    shift
done
((have_requests)) || bench_opts+=(--requests 10000)
if ((${#workloads[@]} == 0)); then
    workloads=(put-v2-64 get-v2-64 qget-v2-64)
fi
bench_args=("${bench_opts[@]}")
for w in "${workloads[@]}"; do
    bench_args+=(--workload "$w")
done

# ---- binaries (never built here: another job may be building the repo) ----
if [[ $SKIP_OURS != 1 && ! -x $OURS_BIN ]]; then
    die "$OURS_BIN is missing; build it first: cargo build --release --bin etcd"
fi
if [[ ! -x $BENCH_BIN ]]; then
    die "$BENCH_BIN is missing; build it first: cargo build --release --bin etcd-bench"
fi
etcd_version=""
if [[ $SKIP_ETCD != 1 ]]; then
    if [[ -z $ETCD_BIN ]]; then
        ETCD_BIN=$(command -v etcd || true)
        [[ -n $ETCD_BIN ]] || die "etcd 3.4 not found on PATH (install etcd-server or set ETCD_BIN)"
    fi
    [[ -x $ETCD_BIN ]] || die "ETCD_BIN=$ETCD_BIN is not executable"
    etcd_version=$("$ETCD_BIN" --version 2>/dev/null | sed -n 's/^etcd Version: //p')
    [[ $etcd_version == 3.4.* ]] || log "warning: $ETCD_BIN is version '${etcd_version:-?}', not 3.4"
fi
for tool in curl jq python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done

# ---- state and cleanup -----------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/etcd-compare-cluster.XXXXXX")
NODE_PIDS=()
BENCH_PID=""

stop_cluster() {
    local pid
    ((${#NODE_PIDS[@]})) || return 0
    for pid in "${NODE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${NODE_PIDS[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${NODE_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    NODE_PIDS=()
}

# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() {
    if [[ -n $BENCH_PID ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_cluster
    if [[ $KEEP_TMP == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < 8192)); then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

# ---- helpers ---------------------------------------------------------------
# Prints six distinct ports in 20000-32000 that are free to bind on 127.0.0.1.
free_ports() {
    python3 - <<'EOF'
import random, socket
ports = set()
while len(ports) < 6:
    p = random.randint(20000, 32000)
    if p in ports:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    ports.add(p)
print(" ".join(map(str, sorted(ports))))
EOF
}

# shellcheck disable=SC2329 # used by the readiness checks
http_code() { # url
    curl -s --max-time 2 -o /dev/null -w '%{http_code}' "$1" || true
}

check_alive() { # name
    local i
    for i in "${!NODE_PIDS[@]}"; do
        if ! kill -0 "${NODE_PIDS[$i]}" 2>/dev/null; then
            tail -n 30 "$TMP/$1.node$((i + 1)).log" >&2 || true
            die "$1 node$((i + 1)) exited (log above)"
        fi
    done
}

wait_until() { # name description check-function
    local name=$1 what=$2 check=$3
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$check"; do
        check_alive "$name"
        if ((SECONDS >= deadline)); then
            local f
            for f in "$TMP/$name".node*.log; do
                log "--- $f"
                tail -n 15 "$f" >&2 || true
            done
            die "$name: $what not reached within ${READY_TIMEOUT}s (logs above)"
        fi
        sleep 0.2
    done
}

# Number of members of /v2/members at $1 that have a client URL.
# shellcheck disable=SC2329 # used by the readiness checks
members_with_client_urls() {
    curl -sf --max-time 2 "$1/v2/members" 2>/dev/null |
        jq '[.members[]? | select((.clientURLs // []) | length > 0)] | length' 2>/dev/null || echo 0
}

CLIENT_URLS=() # client URLs of node1..3
LEADER_URL=""
FOLLOWER_URL=""

# ---- ours ------------------------------------------------------------------
# shellcheck disable=SC2329 # called through wait_until
ours_first_leader() {
    curl -sf --max-time 2 -o /dev/null "${CLIENT_URLS[0]}/v1/leader"
}

# shellcheck disable=SC2329 # called through wait_until
ours_ready() {
    local u
    [[ $(members_with_client_urls "${CLIENT_URLS[0]}") == 3 ]] || return 1
    for u in "${CLIENT_URLS[@]}"; do
        [[ $(http_code "$u/v1/keys/") == 200 ]] || return 1
        curl -sf --max-time 2 -o /dev/null "$u/v1/leader" || return 1
    done
}

start_ours() {
    local ports c p i
    read -r -a ports <<<"$(free_ports)"
    CLIENT_URLS=()
    for i in 1 2 3; do
        c=127.0.0.1:${ports[$((i - 1))]}
        p=127.0.0.1:${ports[$((i + 2))]}
        CLIENT_URLS+=("http://$c")
        local join=()
        ((i == 1)) || join=(-C "127.0.0.1:${ports[3]}")
        log "starting ours node$i: client $c peer $p"
        "$OURS_BIN" -n "node$i" -d "$TMP/ours/node$i" -c "$c" -s "$p" "${join[@]}" \
            >"$TMP/ours.node$i.log" 2>&1 &
        NODE_PIDS+=($!)
        # node1 must be up (and its own leader) before the others join it.
        if ((i == 1)); then wait_until ours "node1 leader" ours_first_leader; fi
    done
    wait_until ours "3 members, all answering" ours_ready

    local leader_peer
    leader_peer=$(curl -sf --max-time 2 "${CLIENT_URLS[0]}/v1/leader")
    leader_peer=${leader_peer%/}
    local members
    members=$(curl -sf --max-time 2 "${CLIENT_URLS[0]}/v2/members")
    LEADER_URL=$(jq -r --arg p "$leader_peer" \
        '[.members[] | select(.peerURLs | map(rtrimstr("/")) | index($p))][0].clientURLs[0] // empty' <<<"$members")
    FOLLOWER_URL=$(jq -r --arg p "$leader_peer" \
        '[.members[] | select(.peerURLs | map(rtrimstr("/")) | index($p) | not)][0].clientURLs[0] // empty' <<<"$members")
    [[ -n $LEADER_URL && -n $FOLLOWER_URL ]] || die "ours: leader peer $leader_peer not found in $members"
}

# ---- etcd 3.4 --------------------------------------------------------------
# shellcheck disable=SC2329 # called through wait_until
etcd_ready() {
    local u
    for u in "${CLIENT_URLS[@]}"; do
        curl -s --max-time 2 "$u/health" | grep -q '"health":[[:space:]]*"true"' || return 1
    done
    [[ $(members_with_client_urls "${CLIENT_URLS[0]}") == 3 ]] || return 1
    etcd_find_leader
}

# Sets LEADER_URL / FOLLOWER_URL from /v2/stats/self; fails without a leader.
# shellcheck disable=SC2329 # used by the readiness checks
etcd_find_leader() {
    local u state
    LEADER_URL=""
    FOLLOWER_URL=""
    for u in "${CLIENT_URLS[@]}"; do
        state=$(curl -sf --max-time 2 "$u/v2/stats/self" | jq -r '.state // empty' 2>/dev/null || true)
        if [[ $state == StateLeader ]]; then
            LEADER_URL=$u
        elif [[ -z $FOLLOWER_URL ]]; then
            FOLLOWER_URL=$u
        fi
    done
    [[ -n $LEADER_URL && -n $FOLLOWER_URL ]]
}

start_etcd() {
    local ports i cluster=""
    read -r -a ports <<<"$(free_ports)"
    CLIENT_URLS=()
    for i in 1 2 3; do
        cluster+="${cluster:+,}n$i=http://127.0.0.1:${ports[$((i + 2))]}"
    done
    for i in 1 2 3; do
        local c=http://127.0.0.1:${ports[$((i - 1))]} p=http://127.0.0.1:${ports[$((i + 2))]}
        CLIENT_URLS+=("$c")
        log "starting etcd $etcd_version n$i: client $c peer $p"
        "$ETCD_BIN" --name "n$i" --data-dir "$TMP/etcd34/n$i" --enable-v2=true \
            --listen-client-urls "$c" --advertise-client-urls "$c" \
            --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            >"$TMP/etcd.node$i.log" 2>&1 &
        NODE_PIDS+=($!)
    done
    wait_until etcd "3 healthy members and a leader" etcd_ready
}

# ---- bench -----------------------------------------------------------------
failed=0
run_bench() { # side role url
    local side=$1 role=$2 url=$3 rc=0
    log "running etcd-bench ${bench_args[*]} $url ($side $role)"
    # In the background so that a signal interrupts `wait` and the traps run.
    "$BENCH_BIN" "${bench_args[@]}" "$url" >"$TMP/$side.$role.raw" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if ((rc != 0)); then
        log "etcd-bench against $side $role exited with $rc"
        failed=1
    fi
    # Prefix every row with the role; the header gets a "role" column.
    awk -v role="$role" 'NR == 1 { printf "%-9s %s\n", "role", $0; next }
                         NF { printf "%-9s %s\n", role, $0 }' \
        "$TMP/$side.$role.raw" >"$TMP/$side.$role.out"
}

print_table() { # side
    local side=$1
    sed -n 1p "$TMP/$side.leader.out"
    tail -n +2 "$TMP/$side.leader.out"
    tail -n +2 "$TMP/$side.follower.out"
}

for side in etcd ours; do
    if [[ $side == etcd ]]; then
        [[ $SKIP_ETCD != 1 ]] || continue
        start_etcd
        title="etcd $etcd_version, 3 nodes"
    else
        [[ $SKIP_OURS != 1 ]] || continue
        start_ours
        title="ours: $OURS_BIN, 3 nodes"
    fi
    log "$side: leader $LEADER_URL, follower $FOLLOWER_URL"
    run_bench "$side" leader "$LEADER_URL"
    run_bench "$side" follower "$FOLLOWER_URL"
    stop_cluster
    echo "== $title (leader $LEADER_URL, follower $FOLLOWER_URL) =="
    print_table "$side"
    echo
done

# ---- ratios ----------------------------------------------------------------
if [[ $SKIP_ETCD != 1 && $SKIP_OURS != 1 ]]; then
    echo "== ours / etcd $etcd_version (3-node clusters, same machine, each fresh; req/s > 1 and p50 < 1 favour ours) =="
    awk '
        # Columns: role workload conns ok err secs req/s p50ms p90ms p99ms maxms note
        FNR == 1 { side = (FILENAME ~ /\/etcd\.[a-z]+\.out$/) ? "etcd" : "ours"; next }
        {
            w = $1 " " $2
            if (!(w in seen)) { seen[w] = 1; names[++n] = w }
            if ($4 == "-") { bad[side, w] = ($0 ~ /unsupported/) ? "unsupported" : "failed"; next }
            ok[side, w] = 1; rate[side, w] = $7; p50[side, w] = $8
        }
        function st(side, w) {
            if ((side, w) in bad) return bad[side, w]
            return ((side, w) in ok) ? "ok" : "no result"
        }
        function ratio(a, b) { return (a == "-" || b == "-" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
        END {
            for (i = 1; i <= n; i++) {
                w = names[i]
                if (st("etcd", w) != "ok" || st("ours", w) != "ok") {
                    printf "%-20s  n/a (etcd: %s, ours: %s)\n", w, st("etcd", w), st("ours", w)
                    continue
                }
                ro = rate["ours", w]; re = rate["etcd", w]; po = p50["ours", w]; pe = p50["etcd", w]
                line = sprintf("%-20s ", w)
                if (ro != "-" && re != "-")
                    line = line sprintf(" req/s %s (%.1f / %.1f)  ", ratio(ro, re), ro, re)
                line = line sprintf(" p50 %s (%.3f / %.3f ms)", ratio(po, pe), po, pe)
                print line
            }
        }' "$TMP"/etcd.leader.out "$TMP"/etcd.follower.out "$TMP"/ours.leader.out "$TMP"/ours.follower.out
fi

exit "$failed"
