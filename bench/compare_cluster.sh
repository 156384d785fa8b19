#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2329 # the readiness checks are called through wait_until
# Three nodes: runs etcd-bench against a 3-member cluster of this repo's server
# and against a 3-member etcd 3.4 cluster, alternating ours, etcd, ours, etcd,
# ... ROUNDS times; every run starts a fresh cluster (new data dirs, loopback,
# free ports picked at random), prints the 1-minute load average, runs the
# workloads, and stops the cluster. By default the load is spread over all
# three members: connection c goes to member c mod 3 (etcd-bench --endpoints),
# so put-v2-3 is one sequential writer pinned to each member. Ends with a
# markdown table of the medians and the ratio ours/etcd, then one row per run.
# See bench/README.md.
#
# usage: bench/compare_cluster.sh [etcd-bench options] [WORKLOAD...]
#   default workloads: put-v2-3 put-v2-64 put-v2-256 get-v2-64 qget-v2-64
#   default options:   --requests 10000 (unless --requests is given)
#   e.g.   bench/compare_cluster.sh --requests 5000
#          TARGETS="all leader follower" bench/compare_cluster.sh put-v2-64
#
# environment:
#   ROUNDS=N     runs per server (default 3)
#   TARGETS=...  where the load goes, space-separated, each run does all in turn:
#                all (default: round-robin over the 3 members), leader (all
#                connections to the leader), follower (all to one follower)
#   OURS_BIN     our server      (default: <repo>/target/release/etcd; never built here)
#   BENCH_BIN    the bench tool  (default: <repo>/target/release/etcd-bench; never built here)
#   ETCD_BIN     etcd 3.4        (default: `etcd` on PATH)
#   SKIP_OURS=1  bench etcd 3.4 only;  SKIP_ETCD=1  bench ours only
#   KEEP_TMP=1   keep the temp dir (data dirs, server logs, bench output)
#
# Exit status: 0 when every bench run succeeded, 1 otherwise.
set -euo pipefail

LOG_PREFIX=compare_cluster
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-3}
TARGETS=${TARGETS:-all}
SKIP_OURS=${SKIP_OURS:-0}
SKIP_ETCD=${SKIP_ETCD:-0}
READY_TIMEOUT=90 # seconds for a cluster to be ready

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
read -r -a targets <<<"$TARGETS"
((${#targets[@]})) || die "TARGETS is empty"
for t in "${targets[@]}"; do
    [[ $t == all || $t == leader || $t == follower ]] || die "TARGETS: unknown target '$t'"
done
parse_bench_args "${BASH_SOURCE[0]}" "$@"
have_requests=0
for o in "${BENCH_OPTS[@]}"; do
    [[ $o == --requests || $o == --requests=* ]] && have_requests=1
done
((have_requests)) || BENCH_OPTS+=(--requests 10000)
if ((${#WORKLOADS[@]} == 0)); then
    WORKLOADS=(put-v2-3 put-v2-64 put-v2-256 get-v2-64 qget-v2-64)
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
command -v jq >/dev/null 2>&1 || die "jq is required"
bench_init etcd-compare-cluster

CLIENT_URLS=() # client URLs of node1..3
LEADER_URL=""
FOLLOWER_URL=""
LOGS=()

# Number of members of /v2/members at $1 that have a client URL.
members_with_client_urls() {
    curl -sf --max-time 2 "$1/v2/members" 2>/dev/null |
        jq '[.members[]? | select((.clientURLs // []) | length > 0)] | length' 2>/dev/null || echo 0
}

# ---- ours ------------------------------------------------------------------
ours_first_leader() {
    curl -sf --max-time 2 -o /dev/null "${CLIENT_URLS[0]}/v1/leader"
}

ours_ready() {
    local u
    [[ $(members_with_client_urls "${CLIENT_URLS[0]}") == 3 ]] || return 1
    for u in "${CLIENT_URLS[@]}"; do
        [[ $(http_code "$u/v1/keys/") == 200 ]] || return 1
        curl -sf --max-time 2 -o /dev/null "$u/v1/leader" || return 1
    done
}

start_ours() { # dir
    local dir=$1 ports c p i
    read -r -a ports <<<"$(free_ports 6)"
    CLIENT_URLS=()
    LOGS=()
    for i in 1 2 3; do
        c=127.0.0.1:${ports[$((i - 1))]}
        p=127.0.0.1:${ports[$((i + 2))]}
        CLIENT_URLS+=("http://$c")
        LOGS+=("$dir.node$i.log")
        local join=()
        ((i == 1)) || join=(-C "127.0.0.1:${ports[3]}")
        "$OURS_BIN" -n "node$i" -d "$dir/node$i" -c "$c" -s "$p" "${join[@]}" \
            >"$dir.node$i.log" 2>&1 &
        SERVER_PIDS+=($!)
        # node1 must be up (and its own leader) before the others join it.
        if ((i == 1)); then
            wait_until "ours node1 leader" ours_first_leader "$READY_TIMEOUT" "${LOGS[@]}"
        fi
    done
    wait_until "ours: 3 members, all answering" ours_ready "$READY_TIMEOUT" "${LOGS[@]}"

    local leader_peer members
    leader_peer=$(curl -sf --max-time 2 "${CLIENT_URLS[0]}/v1/leader")
    leader_peer=${leader_peer%/}
    members=$(curl -sf --max-time 2 "${CLIENT_URLS[0]}/v2/members")
    LEADER_URL=$(jq -r --arg p "$leader_peer" \
        '[.members[] | select(.peerURLs | map(rtrimstr("/")) | index($p))][0].clientURLs[0] // empty' <<<"$members")
    FOLLOWER_URL=$(jq -r --arg p "$leader_peer" \
        '[.members[] | select(.peerURLs | map(rtrimstr("/")) | index($p) | not)][0].clientURLs[0] // empty' <<<"$members")
    [[ -n $LEADER_URL && -n $FOLLOWER_URL ]] || die "ours: leader peer $leader_peer not found in $members"
}

# ---- etcd 3.4 --------------------------------------------------------------
# Sets LEADER_URL / FOLLOWER_URL from /v2/stats/self; fails without a leader.
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

etcd_ready() {
    local u
    for u in "${CLIENT_URLS[@]}"; do
        curl -s --max-time 2 "$u/health" | grep -q '"health":[[:space:]]*"true"' || return 1
    done
    [[ $(members_with_client_urls "${CLIENT_URLS[0]}") == 3 ]] || return 1
    etcd_find_leader
}

start_etcd() { # dir
    local dir=$1 ports i cluster=""
    read -r -a ports <<<"$(free_ports 6)"
    CLIENT_URLS=()
    LOGS=()
    for i in 1 2 3; do
        cluster+="${cluster:+,}n$i=http://127.0.0.1:${ports[$((i + 2))]}"
    done
    for i in 1 2 3; do
        local c=http://127.0.0.1:${ports[$((i - 1))]} p=http://127.0.0.1:${ports[$((i + 2))]}
        CLIENT_URLS+=("$c")
        LOGS+=("$dir.n$i.log")
        "$ETCD_BIN" --name "n$i" --data-dir "$dir/n$i" --enable-v2=true \
            --listen-client-urls "$c" --advertise-client-urls "$c" \
            --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            >"$dir.n$i.log" 2>&1 &
        SERVER_PIDS+=($!)
    done
    wait_until "etcd: 3 healthy members and a leader" etcd_ready "$READY_TIMEOUT" "${LOGS[@]}"
}

# ---- the runs --------------------------------------------------------------
failed=0
: >"$TMP/runs"
for ((round = 1; round <= ROUNDS; round++)); do
    for side in ours etcd; do
        if [[ $side == ours && $SKIP_OURS == 1 ]] || [[ $side == etcd && $SKIP_ETCD == 1 ]]; then
            continue
        fi
        if [[ $side == etcd ]]; then
            start_etcd "$TMP/etcd.$round"
            name="etcd $ETCD_VERSION"
        else
            start_ours "$TMP/ours.$round"
            name="ours ($OURS_BIN)"
        fi
        for target in "${targets[@]}"; do
            case $target in
            all) urls=("${CLIENT_URLS[@]}") ;;
            leader) urls=("$LEADER_URL") ;;
            follower) urls=("$FOLLOWER_URL") ;;
            esac
            load=$(loadavg1)
            echo "== round $round/$ROUNDS: $name, 3 nodes, load to $target (${urls[*]}); load average (1 min): $load =="
            out=$TMP/$side.$round.$target.out
            rc=0
            run_bench_to "$out" "${bench_args[@]}" --endpoints "$(
                IFS=,
                echo "${urls[*]}"
            )" || rc=$?
            cat "$out"
            if ((rc != 0)); then
                log "etcd-bench against $side ($target, round $round) exited with $rc"
                failed=1
            fi
            printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$side" "$load" "$target" "$out" >>"$TMP/runs"
            echo
        done
        stop_all_servers
    done
done

echo "== summary: 3-node clusters on loopback, same machine, fresh cluster per run =="
echo
python3 "$BENCH_DIR/summarize.py" runs "$TMP/runs" "etcd ${ETCD_VERSION:-3.4}"
exit "$failed"
