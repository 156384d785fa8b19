#!/usr/bin/env bash
# What each candidate crate adds: crates in the dependency graph and the cold
# release build time, each measured by building wal-compare with only that
# candidate's feature (baseline: no optional crate; it has libc + crc32c).
# Each cold build uses a fresh target dir under $WALBENCH_TMP and the shared
# release-build lock; the time counts from when the lock is held.
set -euo pipefail
cd "$(dirname "$0")"
TMP=${WALBENCH_TMP:-/work/walbench-tmp}
printf '%-12s %10s %12s %14s %18s %16s %s\n' feature tree_lines unique_crates added_crates unique_with_build cold_build_s load_before
base_unique=
for f in none raft-engine okaywal raft-log redb; do
  if [ "$f" = none ]; then feat=(--no-default-features); else feat=(--no-default-features --features "$f"); fi
  lines=$(cargo tree -e normal "${feat[@]}" | wc -l)
  uniq=$(cargo tree -e normal "${feat[@]}" --prefix none | sed 's/ (\*)$//' | sort -u | wc -l)
  withb=$(cargo tree -e normal,build "${feat[@]}" --prefix none | sed 's/ (\*)$//' | sort -u | wc -l)
  [ -n "$base_unique" ] || base_unique=$uniq
  t="$TMP/surface-target-$f"
  rm -rf "$t"
  load=$(cut -d' ' -f1 /proc/loadavg)
  secs=$(flock /tmp/release-build.lock bash -c '
    s=$(date +%s.%N)
    CARGO_TARGET_DIR="$1" cargo build --release --quiet "${@:2}" >/dev/null 2>&1
    e=$(date +%s.%N); echo "$e - $s" | bc' _ "$t" "${feat[@]}")
  rm -rf "$t"
  printf '%-12s %10s %12s %14s %18s %16.1f %s\n' "$f" "$lines" "$uniq" "$((uniq - base_unique))" "$withb" "$secs" "$load"
done
