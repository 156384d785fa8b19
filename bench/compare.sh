#!/usr/bin/env bash
# Runs etcd-bench against this repo's server and against the real etcd 3.4,
# one after the other, each freshly started in its own temp dir, on loopback
# only, and prints both tables plus a ratio line per workload.
#
# usage: bench/compare.sh [etcd-bench options] [WORKLOAD...]
#   default workloads: put-v2-1 put-v2-64 put-v1-1 put-v1-64
#   e.g.   bench/compare.sh --requests 5000 put-v2-64 get-v2-64 watch-v2-1000
#
# environment:
#   OURS_BIN    our server      (default: <repo>/target/release/etcd, built if missing)
#   BENCH_BIN   the bench tool  (default: <repo>/target/release/etcd-bench, built if missing)
#   ETCD_BIN    etcd 3.4        (default: `etcd` on PATH; Debian's etcd-server is
#               installed with apt-get when missing and running as root)
#   SKIP_OURS=1 bench etcd 3.4 only;  SKIP_ETCD=1 bench ours only
#   ROUNDS=N    run both sides N times, alternating which goes first (default 1);
#               the ratio lines then use the medians over the rounds
#   KEEP_TMP=1  keep the temp dir (data dirs, server logs, bench output)
#
# Ports used (all 127.0.0.1): ours client 14001 / peer 17001, etcd 12379 / 12380.
# Exit status: 0 when every bench run succeeded, 1 otherwise.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_OURS=$REPO_ROOT/target/release/etcd
DEFAULT_BENCH=$REPO_ROOT/target/release/etcd-bench
OURS_BIN=${OURS_BIN:-$DEFAULT_OURS}
BENCH_BIN=${BENCH_BIN:-$DEFAULT_BENCH}
ETCD_BIN=${ETCD_BIN:-}
SKIP_OURS=${SKIP_OURS:-0}
SKIP_ETCD=${SKIP_ETCD:-0}
KEEP_TMP=${KEEP_TMP:-0}
ROUNDS=${ROUNDS:-1}

OURS_CLIENT=127.0.0.1:14001
OURS_PEER=127.0.0.1:17001
ETCD_CLIENT=127.0.0.1:12379
ETCD_PEER=127.0.0.1:12380
READY_TIMEOUT=60 # seconds to wait for a server to answer

log() { printf 'compare: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ---- arguments: options go to etcd-bench, the rest are workload names ------
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
bench_opts=()
workloads=()
while (($#)); do
    case $1 in
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    --json) die "--json is not supported here (the tables are parsed)" ;;
    --*=*) bench_opts+=("$1") ;;
    --*)
        (($# >= 2)) || die "$1 needs a value"
        bench_opts+=("$1" "$2")
        shift
        ;;
    *) workloads+=("$1") ;;
    esac
    shift
done
if ((${#workloads[@]} == 0)); then
    workloads=(put-v2-1 put-v2-64 put-v1-1 put-v1-64)
fi
bench_args=("${bench_opts[@]}")
for w in "${workloads[@]}"; do
    bench_args+=(--workload "$w")
done

# ---- state and cleanup -----------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/etcd-compare.XXXXXX")
SERVER_PID=""
BENCH_PID=""

stop_server() {
    local pid=$SERVER_PID
    [[ -n $pid ]] || return 0
    SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() {
    if [[ -n $BENCH_PID ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_server
    if [[ $KEEP_TMP == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- binaries --------------------------------------------------------------
ensure_etcd() {
    if [[ -n $ETCD_BIN ]]; then
        [[ -x $ETCD_BIN ]] || die "ETCD_BIN=$ETCD_BIN is not executable"
        return
    fi
    local deadline=$((SECONDS + 900))
    while ! command -v etcd >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "etcd still missing after 15 minutes"
        [[ $(id -u) == 0 ]] || die "etcd 3.4 not found: install Debian's etcd-server, or set ETCD_BIN"
        log "etcd not found: installing etcd-server (waits for a running apt/dpkg)"
        # The lock timeouts make apt wait for an install already in progress.
        if apt-get -o DPkg::Lock::Timeout=120 install -y -q etcd-server >&2; then
            continue
        fi
        command -v etcd >/dev/null 2>&1 && break
        apt-get -o DPkg::Lock::Timeout=120 update -q >&2 || sleep 5
    done
    ETCD_BIN=$(command -v etcd)
}

build_list=()
if [[ $SKIP_OURS != 1 && ! -x $OURS_BIN ]]; then
    [[ $OURS_BIN == "$DEFAULT_OURS" ]] || die "OURS_BIN=$OURS_BIN is not executable"
    build_list+=(--bin etcd)
fi
if [[ ! -x $BENCH_BIN ]]; then
    [[ $BENCH_BIN == "$DEFAULT_BENCH" ]] || die "BENCH_BIN=$BENCH_BIN is not executable"
    build_list+=(--bin etcd-bench)
fi
if ((${#build_list[@]})); then
    log "building: cargo build --release ${build_list[*]}"
    (cd "$REPO_ROOT" && cargo build --release "${build_list[@]}") >&2
fi
if [[ $SKIP_ETCD != 1 ]]; then
    ensure_etcd
    etcd_version=$("$ETCD_BIN" --version 2>/dev/null | sed -n 's/^etcd Version: //p')
    [[ $etcd_version == 3.4.* ]] || log "warning: $ETCD_BIN is version '${etcd_version:-?}', not 3.4"
fi

# Watch workloads hold ~1000 sockets in each process.
if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < 8192)); then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

# ---- helpers ---------------------------------------------------------------
port_busy() { # host:port
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

wait_ready() { # name logfile check-function
    local name=$1 logfile=$2 check=$3
    local deadline=$((SECONDS + READY_TIMEOUT))
    until "$check"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 30 "$logfile" >&2 || true
            die "$name exited before answering (log above)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$logfile" >&2 || true
            die "$name did not answer within ${READY_TIMEOUT}s (log above)"
        fi
        sleep 0.2
    done
}

# shellcheck disable=SC2329 # called through wait_ready
etcd_ready() {
    curl -s --max-time 2 "http://$ETCD_CLIENT/health" | grep -q '"health":[[:space:]]*"true"'
}

# shellcheck disable=SC2329 # called through wait_ready
ours_ready() {
    # Ready once a leader is known; a server without /v1/leader counts as ready
    # as soon as /version answers.
    curl -sf --max-time 2 -o /dev/null "http://$OURS_CLIENT/v1/leader" && return 0
    curl -sf --max-time 2 -o /dev/null "http://$OURS_CLIENT/version" || return 1
    local code
    code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://$OURS_CLIENT/v1/leader" || true)
    [[ $code == 404 || $code == 405 ]]
}

failed=0
run_bench() { # side url
    local side=$1 url=$2 rc=0
    log "running etcd-bench ${bench_args[*]} $url"
    # In the background so that a signal interrupts `wait` and the traps run.
    "$BENCH_BIN" "${bench_args[@]}" "$url" >"$TMP/$side.out" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    cat "$TMP/$side.out"
    if ((rc != 0)); then
        log "etcd-bench against $side exited with $rc"
        failed=1
    fi
}

start_etcd() {
    local p
    for p in "$ETCD_CLIENT" "$ETCD_PEER"; do
        ! port_busy "$p" || die "$p is already in use"
    done
    log "starting etcd $etcd_version on $ETCD_CLIENT"
    "$ETCD_BIN" --name bench --data-dir "$TMP/etcd34" --enable-v2=true \
        --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
        --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
        --initial-cluster "bench=http://$ETCD_PEER" >"$TMP/etcd34.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "etcd 3.4" "$TMP/etcd34.log" etcd_ready
}

start_ours() {
    local p
    for p in "$OURS_CLIENT" "$OURS_PEER"; do
        ! port_busy "$p" || die "$p is already in use"
    done
    log "starting $OURS_BIN on $OURS_CLIENT"
    "$OURS_BIN" -n bench0 -d "$TMP/ours" -c "$OURS_CLIENT" -s "$OURS_PEER" >"$TMP/ours.log" 2>&1 &
    SERVER_PID=$!
    wait_ready "our server" "$TMP/ours.log" ours_ready
}

# ---- the runs: each side fresh; etcd first, order alternating per round ----
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then sides=(etcd ours); else sides=(ours etcd); fi
    for side in "${sides[@]}"; do
        if [[ $side == etcd ]]; then
            [[ $SKIP_ETCD != 1 ]] || continue
            start_etcd
            title="etcd $etcd_version (http://$ETCD_CLIENT)"
            url=http://$ETCD_CLIENT
        else
            [[ $SKIP_OURS != 1 ]] || continue
            start_ours
            title="ours: $OURS_BIN (http://$OURS_CLIENT)"
            url=http://$OURS_CLIENT
        fi
        if ((ROUNDS > 1)); then title="round $round/$ROUNDS: $title"; fi
        echo "== $title =="
        run_bench "$side.$round" "$url"
        stop_server
        echo
    done
done

# ---- ratios ----------------------------------------------------------------
if [[ $SKIP_ETCD != 1 && $SKIP_OURS != 1 ]]; then
    what="same machine, each side fresh"
    if ((ROUNDS > 1)); then what="medians of $ROUNDS rounds, $what"; fi
    echo "== ours / etcd $etcd_version ($what; req/s > 1 and p50 < 1 favour ours) =="
    awk '
        # Table columns: workload conns ok err secs req/s p50ms p90ms p99ms maxms note
        FNR == 1 { side = (FILENAME ~ /\/etcd\.[0-9]+\.out$/) ? "etcd" : "ours"; next }
        {
            w = $1
            if (!(w in seen)) { seen[w] = 1; names[++n] = w }
            if ($3 == "-") { bad[side, w] = ($0 ~ /unsupported/) ? "unsupported" : "failed"; next }
            k = ++cnt[side, w]; rate[side, w, k] = $6; p50[side, w, k] = $7
        }
        function st(side, w) {
            if ((side, w) in bad) return bad[side, w]
            return ((side, w) in cnt) ? "ok" : "no result"
        }
        # Median of the values arr[side, w, 1..cnt]; "-" when any is "-".
        function median(arr, side, w,    m, i, j, t, v) {
            m = cnt[side, w]
            for (i = 1; i <= m; i++) {
                if (arr[side, w, i] == "-") return "-"
                v[i] = arr[side, w, i] + 0
            }
            for (i = 2; i <= m; i++)
                for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
            return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
        }
        function ratio(a, b) { return (a == "-" || b == "-" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
        END {
            for (i = 1; i <= n; i++) {
                w = names[i]
                if (st("etcd", w) != "ok" || st("ours", w) != "ok") {
                    printf "%-14s  n/a (etcd: %s, ours: %s)\n", w, st("etcd", w), st("ours", w)
                    continue
                }
                ro = median(rate, "ours", w); re = median(rate, "etcd", w)
                po = median(p50, "ours", w); pe = median(p50, "etcd", w)
                line = sprintf("%-14s ", w)
                if (ro != "-" && re != "-")
                    line = line sprintf(" req/s %s (%.1f / %.1f)  ", ratio(ro, re), ro, re)
                line = line sprintf(" p50 %s (%.3f / %.3f ms)", ratio(po, pe), po, pe)
                print line
            }
        }' "$TMP"/etcd.*.out "$TMP"/ours.*.out
fi

exit "$failed"
