# shellcheck shell=bash
# Helpers shared by bench/compare.sh, bench/compare_cluster.sh and bench/scale.sh.
# Sourced, not run. The sourcing script sets LOG_PREFIX first; it must run
# under `set -euo pipefail` and call `bench_init` once.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # used by the sourcing scripts
BENCH_DIR=$REPO_ROOT/bench
OURS_BIN=${OURS_BIN:-$REPO_ROOT/target/release/etcd}
BENCH_BIN=${BENCH_BIN:-$REPO_ROOT/target/release/etcd-bench}
ETCD_BIN=${ETCD_BIN:-}
KEEP_TMP=${KEEP_TMP:-0}
ETCD_VERSION=""
TMP=""
BENCH_PID=""
SERVER_PIDS=() # every server process this script started and has not reaped

log() { printf '%s: %s\n' "${LOG_PREFIX:-bench}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# The 1-minute load average of this machine.
loadavg1() { cut -d' ' -f1 /proc/loadavg; }

# Milliseconds since the epoch.
now_ms() { date +%s%3N; }

# Prints N distinct ports in 20000-32000 that are free to bind on 127.0.0.1
# right now (another program may still take one before we do).
free_ports() { # n
    python3 - "$1" <<'EOF'
import random, socket, sys
want = int(sys.argv[1])
ports = set()
while len(ports) < want:
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


http_code() { # url
    curl -s --max-time 2 -o /dev/null -w '%{http_code}' "$1" || true
}

# Checks the binaries; with $1 = 1 etcd 3.4 is needed too (found on PATH, or
# installed from Debian's etcd-server when running as root).
check_binaries() { # need_ours need_etcd
    local need_ours=$1 need_etcd=$2 tool
    for tool in curl python3; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
    done
    local build="flock /tmp/release-build.lock cargo build --release --bin etcd --bin etcd-bench"
    if [[ $need_ours == 1 && ! -x $OURS_BIN ]]; then
        die "$OURS_BIN is missing; build it first: $build"
    fi
    [[ -x $BENCH_BIN ]] || die "$BENCH_BIN is missing; build it first: $build"
    [[ $need_etcd == 1 ]] || return 0
    if [[ -z $ETCD_BIN ]]; then
        if ! command -v etcd >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
            log "etcd not found: installing Debian's etcd-server"
            apt-get -o DPkg::Lock::Timeout=120 install -y -q etcd-server >&2 ||
                { apt-get -o DPkg::Lock::Timeout=120 update -q >&2 &&
                    apt-get -o DPkg::Lock::Timeout=120 install -y -q etcd-server >&2; } ||
                true
        fi
        ETCD_BIN=$(command -v etcd || true)
        [[ -n $ETCD_BIN ]] || die "etcd 3.4 not found on PATH (install etcd-server or set ETCD_BIN)"
    fi
    [[ -x $ETCD_BIN ]] || die "ETCD_BIN=$ETCD_BIN is not executable"
    ETCD_VERSION=$("$ETCD_BIN" --version 2>/dev/null | sed -n 's/^etcd Version: //p')
    [[ $ETCD_VERSION == 3.4.* ]] || log "warning: $ETCD_BIN is version '${ETCD_VERSION:-?}', not 3.4"
}

# Sends SIGTERM to one server and waits for it to exit (KILL after $2 seconds,
# default 10). Returns 1 when it had to be killed.
stop_pid() { # pid [grace_seconds]
    local pid=$1 grace=${2:-10} i rc=0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running ${grace}s after SIGTERM: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        rc=1
    fi
    wait "$pid" 2>/dev/null || true
    local kept=() p
    for p in "${SERVER_PIDS[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    SERVER_PIDS=("${kept[@]}")
    return "$rc"
}

stop_all_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        stop_pid "$pid" 10 || true
    done
}

# Waits until check-function succeeds, at most $3 seconds, while every
# started server is alive; on failure prints the tail of the logs and dies.
wait_until() { # description check-function timeout logfile...
    local what=$1 check=$2 timeout=$3
    shift 3
    local deadline=$((SECONDS + timeout)) pid f
    until "$check"; do
        for pid in "${SERVER_PIDS[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                for f in "$@"; do
                    log "--- $f"
                    tail -n 20 "$f" >&2 || true
                done
                die "$what: a server (pid $pid) exited (logs above)"
            fi
        done
        if ((SECONDS >= deadline)); then
            for f in "$@"; do
                log "--- $f"
                tail -n 20 "$f" >&2 || true
            done
            die "$what: not reached within ${timeout}s (logs above)"
        fi
        sleep 0.1
    done
}

# Runs etcd-bench with the given arguments into $OUT_FILE, in the background
# so that a signal interrupts `wait` and the traps run. Returns its status.
run_bench_to() { # out_file args...
    local out=$1 rc=0
    shift
    "$BENCH_BIN" "$@" >"$out" &
    BENCH_PID=$!
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    return "$rc"
}

# shellcheck disable=SC2329 # called by the EXIT trap
bench_cleanup() {
    if [[ -n $BENCH_PID ]]; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    stop_all_servers
    if [[ -n $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
}

# Creates the temp dir and installs the traps.
bench_init() { # tmp-name
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # Watch workloads hold ~1000 sockets in each process.
    if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < 8192)); then
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    fi
}

# Splits the command line into etcd-bench options (BENCH_OPTS) and workload
# names (WORKLOADS); prints the header of the calling script on -h.
parse_bench_args() { # script args...
    local script=$1
    shift
    BENCH_OPTS=()
    WORKLOADS=()
    while (($#)); do
        case $1 in
        -h | --help)
            sed -n '2,/^set -euo/p' "$script" | sed '$d' | grep -v '^# shellcheck' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        --json) die "--json is not supported here (the tables are parsed)" ;;
        --endpoints* | --await-key* | --pid*) die "$1 is set by this script" ;;
        --*=*) BENCH_OPTS+=("$1") ;;
        --*)
            (($# >= 2)) || die "$1 needs a value"
            BENCH_OPTS+=("$1" "$2")
            shift
            ;;
        -*) die "unknown option $1" ;;
        *) WORKLOADS+=("$1") ;;
        esac
        shift
    done
}
