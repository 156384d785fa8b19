#!/usr/bin/env bash
# Builds wal-compare (release, serialized with other release builds on this
# machine through flock) and runs every candidate x workload in alternating
# rounds (A B C D ... A B C D ...), then writes the median tables.
#
# Environment knobs (defaults in brackets):
#   ROUNDS [3]  WALBENCH_TMP [/work/walbench-tmp]  OUT [results.tsv]
#   CANDIDATES [all]  WORKLOADS [all]
#   QUIET_CPU [25]  busy % of all CPUs (sampled 2 s, before each run) under
#                   which the machine counts as quiet
#   WAIT_MAX [30]   seconds to wait for quiet before running anyway (the
#                   run is then recorded with the busy figures; on a machine
#                   that stays busy, waiting longer only stretches the run)
# A run already in OUT (same round, candidate, workload) is skipped, so an
# interrupted run.sh resumes where it stopped.
#   SURFACE [1]     also measure the surface (surface.sh: deps, cold builds)
set -euo pipefail
cd "$(dirname "$0")"

ROUNDS=${ROUNDS:-3}
TMP=${WALBENCH_TMP:-/work/walbench-tmp}
OUT=${OUT:-results.tsv}
QUIET_CPU=${QUIET_CPU:-25}
WAIT_MAX=${WAIT_MAX:-30}
SURFACE=${SURFACE:-1}

flock /tmp/release-build.lock cargo build --release
BIN=target/release/wal-compare
CANDS=${CANDIDATES:-$($BIN list | awk '$1=="candidate"{print $2}' | tr '\n' ' ')}
WORKS=${WORKLOADS:-$($BIN list | awk '$1=="workload"{print $2}' | tr '\n' ' ')}

mkdir -p "$TMP"
echo "# data dir $TMP on: $(df --output=source,fstype,target "$TMP" | tail -1)"
echo "# project  on: $(df --output=source,fstype,target . | tail -1)"

# Busy % of all CPUs over 2 s (iowait counts as idle).
cpu_busy() {
  local a b
  a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
  local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) ))
  echo $(( 100 * busy / (busy + idle + 1) ))
}

wait_quiet() {
  local waited=0 busy
  while :; do
    busy=$(cpu_busy)
    if (( busy <= QUIET_CPU )) || (( waited >= WAIT_MAX )); then
      echo "$busy"; return
    fi
    sleep 8; waited=$((waited + 10))
  done
}

[ -s "$OUT" ] || $BIN header > "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for w in $WORKS; do
    for c in $CANDS; do
      if grep -qP "^(RESULT|SKIP)\t$r\t$c\t$w\t" "$OUT"; then continue; fi
      busy=$(wait_quiet)
      echo "# round=$r workload=$w candidate=$c loadavg: $(cut -d' ' -f1-3 /proc/loadavg) cpu_busy_before=${busy}%" | tee -a "$OUT"
      d="$TMP/run-$r-$c-$w"
      rm -rf "$d"
      if ! $BIN run --round "$r" --candidate "$c" --workload "$w" --dir "$d" | tee -a "$OUT"; then
        echo "FAIL	$r	$c	$w" | tee -a "$OUT"
      fi
      rm -rf "$d"
    done
  done
done

$BIN summarize "$OUT" > results-summary.md
cat results-summary.md
if [ "$SURFACE" = 1 ]; then ./surface.sh | tee surface.txt; fi
