#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2329 # the readiness checks are called through wait_until
# Single node: runs etcd-bench against this repo's server and against etcd 3.4,
# alternating ours, etcd, ours, etcd, ... ROUNDS times; every run starts the
# server fresh on a new data dir (loopback, free ports picked at random), prints
# the 1-minute load average, runs all the workloads, and stops the server.
# Ends with a markdown table of the medians over the rounds and the ratio
# ours/etcd per workload, then one row per run. See bench/README.md.
#
# usage: bench/compare.sh [etcd-bench options] [WORKLOAD...]
#   default workloads: put-v2-1 put-v2-16 put-v2-64 put-v2-256 cas-v2-16 get-v2-64 qget-v2-64
#   e.g.   bench/compare.sh --requests 5000
#          ROUNDS=5 bench/compare.sh --requests 20000 put-v2-64 cas-v2-16
#
# environment:
#   ROUNDS=N     runs per server (default 3)
#   OURS_BIN     our server      (default: <repo>/target/release/etcd; never built here)
#   BENCH_BIN    the bench tool  (default: <repo>/target/release/etcd-bench; never built here)
#   ETCD_BIN     etcd 3.4        (default: `etcd` on PATH; Debian's etcd-server is
#                installed with apt-get when missing and running as root)
#   SKIP_OURS=1  bench etcd 3.4 only;  SKIP_ETCD=1  bench ours only
#   KEEP_TMP=1   keep the temp dir (data dirs, server logs, bench output)
#
# Exit status: 0 when every bench run succeeded, 1 otherwise.
set -euo pipefail

LOG_PREFIX=compare
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
SKIP_OURS=${SKIP_OURS:-0}
SKIP_ETCD=${SKIP_ETCD:-0}
READY_TIMEOUT=60 # seconds for a server to answer

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
parse_bench_args "${BASH_SOURCE[0]}" "$@"
if ((${#WORKLOADS[@]} == 0)); then
    WORKLOADS=(put-v2-1 put-v2-16 put-v2-64 put-v2-256 cas-v2-16 get-v2-64 qget-v2-64)
fi
bench_args=("${BENCH_OPTS[@]}")
for w in "${WORKLOADS[@]}"; do
    bench_args+=(--workload "$w")
done

need_ours=1 need_etcd=1
[[ $SKIP_OURS != 1 ]] || need_ours=0
[[ $SKIP_ETCD != 1 ]] || need_etcd=0
((need_ours || need_etcd)) || die "SKIP_OURS=1 and SKIP_ETCD=1: nothing to run"
check_binaries "$need_ours" "$need_etcd"
bench_init etcd-compare

CLIENT_URL=""

etcd_ready() {
    curl -s --max-time 2 "$CLIENT_URL/health" | grep -q '"health":[[:space:]]*"true"'
}

ours_ready() {
    # Ready once a leader is known (the node elects itself).
    curl -sf --max-time 2 -o /dev/null "$CLIENT_URL/v1/leader"
}

start_server() { # side dir log
    local side=$1 dir=$2 logf=$3 client peer
    read -r client peer <<<"$(free_ports 2)"
    CLIENT_URL=http://127.0.0.1:$client
    if [[ $side == etcd ]]; then
        "$ETCD_BIN" --name bench --data-dir "$dir" --enable-v2=true \
            --listen-client-urls "$CLIENT_URL" --advertise-client-urls "$CLIENT_URL" \
            --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "bench=http://127.0.0.1:$peer" >"$logf" 2>&1 &
        SERVER_PIDS+=($!)
        wait_until "etcd $ETCD_VERSION on $CLIENT_URL" etcd_ready "$READY_TIMEOUT" "$logf"
    else
        "$OURS_BIN" -n node0 -d "$dir" -c "127.0.0.1:$client" -s "127.0.0.1:$peer" >"$logf" 2>&1 &
        SERVER_PIDS+=($!)
        wait_until "ours on $CLIENT_URL" ours_ready "$READY_TIMEOUT" "$logf"
    fi
}

failed=0
: >"$TMP/runs"
for ((round = 1; round <= ROUNDS; round++)); do
    for side in ours etcd; do
        if [[ $side == ours && $SKIP_OURS == 1 ]] || [[ $side == etcd && $SKIP_ETCD == 1 ]]; then
            continue
        fi
        start_server "$side" "$TMP/$side.$round.data" "$TMP/$side.$round.log"
        pid=${SERVER_PIDS[-1]}
        load=$(loadavg1)
        if [[ $side == etcd ]]; then name="etcd $ETCD_VERSION"; else name="ours ($OURS_BIN)"; fi
        echo "== round $round/$ROUNDS: $name, $CLIENT_URL, pid $pid; load average (1 min): $load =="
        out=$TMP/$side.$round.out
        rc=0
        run_bench_to "$out" "${bench_args[@]}" "$CLIENT_URL" || rc=$?
        cat "$out"
        if ((rc != 0)); then
            log "etcd-bench against $side (round $round) exited with $rc"
            failed=1
        fi
        stop_pid "$pid" 10 || log "$side did not stop within 10s of SIGTERM"
        printf '%s\t%s\t%s\t-\t%s\n' "$round" "$side" "$load" "$out" >>"$TMP/runs"
        echo
    done
done

echo "== summary: single node, same machine, fresh server per run =="
echo
python3 "$BENCH_DIR/summarize.py" runs "$TMP/runs" "etcd ${ETCD_VERSION:-3.4}"
exit "$failed"
