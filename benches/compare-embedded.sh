#!/usr/bin/env bash
# Compares the embedded benchmark of an older commit with the working tree: builds both, runs
# them in interleaved old/new pairs (so both see the same machine noise), and prints, per
# workload and durability mode, the median over the pairs of new speed / old speed (1.00: the
# same; above: the new build is faster).
#
#   benches/compare-embedded.sh OLD_REV [PAIRS]     # e.g. benches/compare-embedded.sh HEAD~5 5
set -euo pipefail
cd "$(dirname "$0")/.."
old_rev=${1:?usage: benches/compare-embedded.sh OLD_REV [PAIRS]}
pairs=${2:-5}
work=$(mktemp -d /tmp/infinitic-compare.XXXXXX)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true' EXIT

binary() { # the benchmark executable cargo builds in $1 with target dir $2
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --bench embedded --no-run 2>&1) |
        sed -n 's/.*Executable benches\/embedded.rs (\(.*\))/\1/p' | tail -n 1
}

git worktree add --detach "$work/old" "$old_rev" >/dev/null
old_bin=$(binary "$work/old" "${OLD_TARGET_DIR:-$work/target}")
new_bin=$(binary "$PWD" "${CARGO_TARGET_DIR:-$PWD/target}")
case "$old_bin" in /*) ;; *) old_bin="$work/old/$old_bin" ;; esac
case "$new_bin" in /*) ;; *) new_bin="$PWD/$new_bin" ;; esac

for i in $(seq "$pairs"); do
    (cd "$work/old" && "$old_bin" --bench >"$work/old-$i.log" 2>&1)
    "$new_bin" --bench >"$work/new-$i.log" 2>&1
    echo "pair $i of $pairs done" >&2
done

# Lines of interest: label, then the durable, before-visible and in-memory columns.
awk -v pairs="$pairs" '
    function metric(line) {
        if (line ~ /^W1a 10 sequential steps \(median\)/) return "W1a latency"
        if (line ~ /^W1b steps\/s \(median of runs\)/) return "W1b throughput"
        if (line ~ /^W1b workflow latency p50/) return "W1b p50"
        if (line ~ /^W1b workflow latency p99/) return "W1b p99"
        if (line ~ /^W2 fan-out/) return "W2 latency"
        return ""
    }
    function median(list, n,    i, j, t, a) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        m = metric($0); if (m == "") next
        side = FILENAME ~ /old-/ ? "old" : "new"
        pair = FILENAME; sub(/.*-/, "", pair); sub(/\.log/, "", pair)
        n = 0
        for (f = 1; f <= NF; f++) if ($f ~ /^[0-9]+\.[0-9]+$/ && n < 3) value[side, pair, m, ++n] = $f
        metrics[m] = 1
    }
    END {
        printf "%-16s %12s %15s %12s   (median of %d pairs, new speed / old speed)\n", "", "durable", "before-visible", "in-memory", pairs
        for (m in metrics) {
            printf "%-16s", m
            for (c = 1; c <= 3; c++) {
                list = ""
                for (p = 1; p <= pairs; p++) {
                    o = value["old", p, m, c]; n = value["new", p, m, c]
                    r = (m == "W1b throughput") ? n / o : o / n
                    list = list " " r
                }
                printf " %12.3f", median(list)
            }
            printf "\n"
        }
    }' "$work"/old-*.log "$work"/new-*.log
echo "logs: $work" >&2
