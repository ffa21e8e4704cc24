#!/usr/bin/env bash
# One workload of `cargo bench --bench peers` as a distribution, not one
# median: runs it alone N times and prints, for every row of its table,
# the median and quartiles of its first metric, then the target's verdict
# (how many runs met it, and the summary's ratio where it has one), then
# the median of each run's difference (for a speedup) or ratio (for
# anything else) between ours and every other row.
#
#   benches/survey.sh WORKLOAD [N]      # default: process-fib, 60 runs
#   benches/survey.sh fib 40            # fib: ~3 s a run
#   SURVEY_AT=1.9 benches/survey.sh process-fib 60
#   BENCH_REPS=21 benches/survey.sh low-rate-cpu 10
#
# SURVEY_AT=X also counts, for every row, the runs whose first metric was
# at X or better (≥ X for a metric marked ↑, ≤ X for one marked ↓); for
# process-fib it defaults to the target, 1.9. It reads the table's printed
# values, rounded to two decimals, so a row can count at 1.9 in a run in
# which the unrounded verdict (1.896, say) missed.
#
# Why: one run's median of a parallel workload moves with the host by as
# much as the distance to its target (process fib ±0.05 around 1.9), so a
# single run cannot say whether a target holds or a change helped; sixty
# runs can (see BENCHMARKS-LOG.md, 2026-12-04 18:24). Each run prints one
# line as it ends: the time, "met", "missed" or "n/a" (process-tiny and
# process-map, whose targets need the Python peers this script skips),
# and the first metric of each row in table order. A run that fails is
# reported and left out.
set -euo pipefail
cd "$(dirname "$0")/.."

workload=${1:-process-fib}
runs=${2:-60}
at=${SURVEY_AT:-}
if [[ -z $at && $workload == process-fib ]]; then at=1.9; fi
reps_default=5
case $workload in fib | process-fib) reps_default=21 ;; esac
reps=${BENCH_REPS:-$reps_default}

cargo bench --bench peers --no-run --quiet
data=$(mktemp)
trap 'rm -f "$data"' EXIT

for ((i = 1; i <= runs; i++)); do
    if ! out=$(BENCH_ONLY=$workload BENCH_NO_PYTHON=1 BENCH_REPS=$reps \
        cargo bench --bench peers 2>/dev/null); then
        echo "$(date +%H:%M:%S) run $i failed; left out" >&2
        continue
    fi
    # The workload's table (its first copy), the header and every row's
    # first metric; then the summary's verdict and ratio.
    awk -v w="$workload" -v run="$i" '
        index($0, "## " w " — ") == 1 && !seen { inside = 1; seen = 1; next }
        inside && /^\| library/ {
            n = split($0, h, "|"); m = h[3]; gsub(/^ +| +$/, "", m)
            print run "\theader\t" m; next }
        inside && /^\|---/ { next }
        inside && /^\|/ {
            split($0, f, "|"); k = f[2]; v = f[3]
            gsub(/^ +| +$/, "", k); gsub(/ /, "", v)
            # Only numbers: a row without a value this run is left out.
            if (v ~ /^[-+]?[0-9.]+([eE][-+]?[0-9]+)?$/) print run "\trow\t" k "\t" v
            next }
        inside { inside = 0 }
        /^\| workload \| ours/ { summary = 1; next }
        summary && /^\|---/ { next }
        summary && /^\|/ {
            split($0, f, "|"); r = f[5]; met = f[7]
            gsub(/^ +/, "", r); split(r, rr, " "); gsub(/ /, "", met)
            print run "\tverdict\t" met "\t" rr[1]; summary = 0 }
    ' <<<"$out" >>"$data"
    if ! grep -q "^$i"$'\theader' "$data"; then
        echo "no table for workload '$workload' in run $i (see BENCH_ONLY in BENCHMARKS.md)" >&2
        exit 1
    fi
    line="$(date +%H:%M:%S) $(awk -F'\t' -v r="$i" '$1 == r && $2 == "verdict" {
        print ($3 == "yes" ? "met" : $3 == "NO" ? "missed" : "n/a") }' "$data")"
    line+=$(awk -F'\t' -v r="$i" '$1 == r && $2 == "row" { printf " %s", $4 }' "$data")
    echo "$line"
done

# Median and quartiles of a column of numbers on stdin (the median of an
# even count is the mean of the middle two; the quartiles are the values
# a quarter of the way in from each end).
quartiles() {
    sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) { printf "-"; exit }
              m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              q = int((NR + 3) / 4)
              printf "median %.4g  q1 %.4g  q3 %.4g", m, v[q], v[NR + 1 - q] }'
}

header=$(awk -F'\t' '$2 == "header" { print $3; exit }' "$data")
higher=1
[[ $header == *↓* ]] && higher=0
mapfile -t rows < <(awk -F'\t' '$2 == "row" && !seen[$3]++ { print $3 }' "$data")

echo
echo "# $runs runs of $workload (BENCH_REPS=$reps): $header"
for row in "${rows[@]}"; do
    values=$(awk -F'\t' -v k="$row" '$2 == "row" && $3 == k { print $4 }' "$data")
    extra=""
    if [[ -n $at ]]; then
        count=$(wc -l <<<"$values")
        reached=$(awk -v t="$at" -v hi="$higher" \
            '(hi && $1 + 0 >= t + 0) || (!hi && $1 + 0 <= t + 0)' <<<"$values" | wc -l)
        extra="  at $at or better in $reached of $count"
    fi
    printf '%-36s %s%s\n' "$row" "$(quartiles <<<"$values")" "$extra"
done
judged=$(awk -F'\t' '$2 == "verdict" && ($3 == "yes" || $3 == "NO")' "$data" | wc -l)
met=$(awk -F'\t' '$2 == "verdict" && $3 == "yes"' "$data" | wc -l)
if ((judged == 0)); then
    printf '%-36s not judged without the Python peers\n' "target"
else
    printf '%-36s met in %d of %d; ratio %s\n' "target" "$met" "$judged" \
        "$(awk -F'\t' '$2 == "verdict" && $4 ~ /^[0-9.]+([eE][-+]?[0-9]+)?$/ { print $4 }' \
            "$data" | quartiles)"
fi
# A speedup compares by difference (its scale is fixed: 1 to the worker
# count); anything else by ratio.
diff=0
[[ $header == speedup* ]] && diff=1
if ((diff)); then op="-"; echo "# ours less each row, within each run"
else op="/"; echo "# ours / each row, within each run"; fi
for row in "${rows[@]}"; do
    [[ $row == ours || $row == sequential ]] && continue
    printf 'ours %s %-34s %s\n' "$op" "$row" "$(awk -F'\t' -v k="$row" -v d="$diff" '
        $2 == "row" && $3 == "ours" { o[$1] = $4 }
        $2 == "row" && $3 == k { x[$1] = $4 }
        END { for (r in o) if (r in x && (d || x[r] + 0 != 0))
                  printf "%.6g\n", d ? o[r] - x[r] : o[r] / x[r] }' "$data" | quartiles)"
done
