#!/usr/bin/env bash
# Process fib as a distribution, not one median: runs
# `BENCH_ONLY=process-fib cargo bench --bench peers` N times (default 60;
# about 2.5 s each on 2 cores) and prints, for each row of that workload,
# the median, the quartiles and in how many runs the speedup reached 1.9,
# then the median of each run's gap between ours and the other rows.
#
#   benches/process_fib_survey.sh [N]          # e.g. 60 runs, ~2.5 minutes
#   BENCH_REPS=21 benches/process_fib_survey.sh 30
#
# One run's median of 21 repetitions moves by ±0.05 with the host; the
# target (≥ 1.9) sits inside that band, so a single run cannot say whether
# a change helped. Sixty runs can (see BENCHMARKS-LOG.md, 2026-12-04 18:24).
# Each run also prints one line: time, then the speedup of each row in the
# order of ROWS, then the other load on the machine in cores.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-60}
ROWS=("ours" "ours on threads" "bare pipes, a reader thread each" \
      "bare pipes, standby readers" "bare pipes, the caller reads" \
      "bare shared memory")
SHORT=("ours" "threads" "reader-each" "standby" "caller-reads" "shared-memory")

cargo bench --bench peers --no-run >/dev/null 2>&1
data=$(mktemp)
trap 'rm -f "$data"' EXIT

# The speedup column of the row named $2 in the table $1.
speedup_of() {
    awk -F'|' -v name="$2" '{ k = $2; gsub(/^ +| +$/, "", k)
        if (k == name) { v = $3; gsub(/ /, "", v); print v; exit } }' <<<"$1"
}

for ((i = 1; i <= runs; i++)); do
    out=$(BENCH_ONLY=process-fib BENCH_NO_PYTHON=1 BENCH_REPS=${BENCH_REPS:-21} \
        cargo bench --bench peers 2>/dev/null)
    line=$(date +%H:%M:%S)
    for row in "${ROWS[@]}"; do
        v=$(speedup_of "$out" "$row")
        line+=" ${v:-nan}"
    done
    load=$(grep -m1 -o 'used [0-9.]* cores' <<<"$out" | awk '{print $2}' || true)
    echo "$line ${load:-?}" | tee -a "$data"
done

# Median and quartiles of a column of numbers on stdin.
quartiles() {
    sort -g | awk '{ v[NR] = $1 }
        END { printf "median %.3f  q1 %.3f  q3 %.3f", v[int((NR + 1) / 2)],
              v[int((NR + 3) / 4)], v[int((3 * NR + 1) / 4)] }'
}

echo
echo "# $runs runs of process fib (BENCH_REPS=${BENCH_REPS:-21})"
for k in "${!SHORT[@]}"; do
    col=$((k + 2))
    reached=$(awk -v c="$col" '$c >= 1.9' "$data" | wc -l)
    printf '%-13s %s  >= 1.9 in %d of %d\n' "${SHORT[$k]}" \
        "$(cut -d' ' -f"$col" "$data" | quartiles)" "$reached" "$runs"
done
for k in $(seq 1 $((${#SHORT[@]} - 1))); do
    col=$((k + 2))
    printf 'ours - %-13s %s\n' "${SHORT[$k]}" \
        "$(awk -v c="$col" '{ printf "%.3f\n", $2 - $c }' "$data" | quartiles)"
done
