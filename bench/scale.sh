#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2329 # the readiness checks are called through wait_until
# Scale: for each server, a fresh single node with default settings (ours:
# `etcd -d DIR -n node0` plus loopback ports; etcd 3.4: --enable-v2=true and its
# default snapshot count) is loaded with KEYS distinct keys of VALUE_SIZE bytes
# at CONNS connections (etcd-bench --workload scale), while one more connection
# writes a probe key every PROBE_MS ms for the whole load. Reports the load's
# duration and writes/s, the probe writer's p99 and max latency, the server's
# memory high-water (VmHWM, and the max of VmRSS sampled every 100 ms) and its
# VmRSS after SETTLE_SECS s of quiet; then stops the server (SIGTERM, waits for
# the exit), starts it again on the same data dir and times spawn -> a GET of
# the last key answering 200 with its value. Ends with a markdown table.
# See bench/README.md.
#
# usage: bench/scale.sh
#   e.g. KEYS=100000 bench/scale.sh;  SERVERS=ours KEYS=200000 bench/scale.sh
#
# environment (defaults in brackets):
#   SERVERS      which servers, in this order ["ours etcd"]
#   KEYS [1000000]  CONNS [64]  VALUE_SIZE [100]  PROBE_MS [5]  SETTLE_SECS [5]
#   LOAD_CAP     seconds after which the load stops handing out writes [3600]
#   READY_TIMEOUT  seconds a (re)started server gets to answer [300]
#   STOP_TIMEOUT   seconds from SIGTERM to exit before SIGKILL [120]
#   OURS_BIN, BENCH_BIN, ETCD_BIN, KEEP_TMP=1  as in bench/compare.sh
#
# Exit status: 0 when everything worked, 1 when a server failed to start, to
# stop or to serve the key after the restart, or a write failed.
set -euo pipefail

LOG_PREFIX=scale
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVERS=${SERVERS:-ours etcd}
KEYS=${KEYS:-1000000}
CONNS=${CONNS:-64}
VALUE_SIZE=${VALUE_SIZE:-100}
PROBE_MS=${PROBE_MS:-5}
SETTLE_SECS=${SETTLE_SECS:-5}
LOAD_CAP=${LOAD_CAP:-3600}
READY_TIMEOUT=${READY_TIMEOUT:-300}
STOP_TIMEOUT=${STOP_TIMEOUT:-120}

case ${1:-} in
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | grep -v '^# shellcheck' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
"") ;;
*) die "no arguments expected (settings are environment variables; see --help)" ;;
esac
for v in KEYS CONNS VALUE_SIZE SETTLE_SECS LOAD_CAP READY_TIMEOUT STOP_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer"
done
[[ $PROBE_MS =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "PROBE_MS must be a number"
((KEYS > 0 && CONNS > 0)) || die "KEYS and CONNS must be at least 1"
read -r -a servers <<<"$SERVERS"
((${#servers[@]})) || die "SERVERS is empty"
need_ours=0 need_etcd=0
for s in "${servers[@]}"; do
    case $s in
    ours) need_ours=1 ;;
    etcd) need_etcd=1 ;;
    *) die "SERVERS: unknown server '$s' (ours, etcd)" ;;
    esac
done
check_binaries "$need_ours" "$need_etcd"
command -v jq >/dev/null 2>&1 || die "jq is required"
bench_init etcd-scale

CLIENT_URL=""
SERVER_CMD=()

# Ready for writes: etcd reports itself healthy, ours knows its leader.
answers() {
    if [[ $side == etcd ]]; then
        curl -s --max-time 2 "$CLIENT_URL/health" | grep -q '"health":[[:space:]]*"true"'
    else
        curl -sf --max-time 2 -o /dev/null "$CLIENT_URL/v1/leader"
    fi
}

# Starts SERVER_CMD with output appended to $1; sets SERVER_PID.
spawn() { # log
    "${SERVER_CMD[@]}" >>"$1" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
}

mem_kb() { # pid field
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

failed=0
results=()
for side in "${servers[@]}"; do
    dir=$TMP/$side.data
    logf=$TMP/$side.log
    read -r client peer <<<"$(free_ports 2)"
    CLIENT_URL=http://127.0.0.1:$client
    if [[ $side == etcd ]]; then
        name="etcd $ETCD_VERSION"
        SERVER_CMD=("$ETCD_BIN" --name scale --data-dir "$dir" --enable-v2=true
            --listen-client-urls "$CLIENT_URL" --advertise-client-urls "$CLIENT_URL"
            --listen-peer-urls "http://127.0.0.1:$peer"
            --initial-advertise-peer-urls "http://127.0.0.1:$peer"
            --initial-cluster "scale=http://127.0.0.1:$peer")
    else
        name="ours ($OURS_BIN)"
        SERVER_CMD=("$OURS_BIN" -d "$dir" -n node0 -c "127.0.0.1:$client" -s "127.0.0.1:$peer")
    fi
    problems=()

    spawn "$logf"
    wait_until "$name on $CLIENT_URL" answers "$READY_TIMEOUT" "$logf"
    load=$(loadavg1)
    echo "== scale: $name, $CLIENT_URL, pid $SERVER_PID: $KEYS keys x $VALUE_SIZE B at $CONNS conns," \
        "probe every $PROBE_MS ms; load average (1 min): $load =="
    rc=0
    run_bench_to "$TMP/$side.scale.json" --workload scale --requests "$KEYS" --conns "$CONNS" \
        --value-size "$VALUE_SIZE" --probe-ms "$PROBE_MS" --pid "$SERVER_PID" \
        --settle-secs "$SETTLE_SECS" --duration-cap "$LOAD_CAP" --json "$CLIENT_URL" || rc=$?
    cat "$TMP/$side.scale.json"
    if ((rc != 0)); then
        problems+=("etcd-bench scale exited with $rc (see stderr above)")
        failed=1
    fi
    data_kb=$(du -sk "$dir" | cut -f1)

    # Stop: SIGTERM, then wait for the exit.
    t0=$(now_ms)
    stop_killed=false
    stop_pid "$SERVER_PID" "$STOP_TIMEOUT" || {
        stop_killed=true
        problems+=("did not exit within ${STOP_TIMEOUT}s of SIGTERM (killed)")
        failed=1
    }
    stop_ms=$(($(now_ms) - t0))
    echo "stopped after SIGTERM in ${stop_ms} ms; data dir ${data_kb} KB"

    # Restart on the same data dir; time spawn -> GET of the last key = 200 + its value.
    t_spawn=$(now_ms)
    spawn "$logf"
    t_bench=$(now_ms)
    rc=0
    run_bench_to "$TMP/$side.restart.json" --await-key "$((KEYS - 1))" --value-size "$VALUE_SIZE" \
        --duration-cap "$READY_TIMEOUT" --json "$CLIENT_URL" || rc=$?
    restart_ms=null
    restart_rss_kb=null
    if ((rc == 0)); then
        ready_ms=$(jq -r '.ready_ms' "$TMP/$side.restart.json")
        restart_ms=$(python3 -c "print(round($t_bench - $t_spawn + $ready_ms, 1))")
        restart_rss_kb=$(mem_kb "$SERVER_PID" VmRSS)
        restart_rss_kb=${restart_rss_kb:-null}
        echo "restarted: spawn to GET 200 with the right value in ${restart_ms} ms" \
            "($(jq -c '.before' "$TMP/$side.restart.json") before)"
    else
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "--- $logf"
            tail -n 20 "$logf" >&2 || true
            problems+=("exited during the restart (log above)")
        else
            problems+=("did not serve the last key within ${READY_TIMEOUT}s of the restart")
        fi
        failed=1
        echo '{}' >"$TMP/$side.restart.json"
    fi
    stop_pid "$SERVER_PID" "$STOP_TIMEOUT" || true
    echo

    scale_json=$(cat "$TMP/$side.scale.json")
    jq -e . >/dev/null 2>&1 <<<"$scale_json" || scale_json=null
    problems_json=$(printf '%s\n' "${problems[@]}" | jq -R . | jq -s 'map(select(length > 0))')
    jq -n --arg server "$side" --arg loadavg "$load" --argjson scale "$scale_json" \
        --argjson data_kb "$data_kb" --argjson stop_ms "$stop_ms" --argjson stop_killed "$stop_killed" \
        --argjson restart_ms "$restart_ms" --argjson restart_rss_kb "$restart_rss_kb" \
        --slurpfile restart "$TMP/$side.restart.json" --argjson problems "$problems_json" \
        '{server: $server, loadavg: $loadavg, scale: $scale, data_kb: $data_kb, stop_ms: $stop_ms,
          stop_killed: $stop_killed, restart_ms: $restart_ms, restart: $restart[0],
          restart_rss_kb: $restart_rss_kb, problems: $problems}' >"$TMP/$side.result.json"
    results+=("$TMP/$side.result.json")
done

echo "== summary: scale, single node, same machine =="
echo
python3 "$BENCH_DIR/summarize.py" scale "etcd ${ETCD_VERSION:-3.4}" "${results[@]}"
exit "$failed"
