#!/usr/bin/env bash
# stats-cost.sh: what the request counters (lib/core/stats.h) cost.
#
# Two `ubdkit serve memory` servers run side by side, the same binary:
# "on" with the counters (and --control, asked once per run so the socket
# is known to work), "off" with UBDKIT_STATS=off, where every bump is a
# load of a global and a predicted branch.  (A build with
# -DUBDKIT_NO_STATS removes even that; pass its binary as UBDKIT_NOSTATS
# to add a third server, "compiled-out".)  Workload by workload and round
# by round they take turns under the same fio job (fio's nbd engine, a
# Unix socket): 4k random reads at QD1 and at QD32.  Reported: IOPS and
# the server's CPU time per request (utime+stime from /proc/PID/stat
# around each run, over the requests fio completed), per round, and the
# medians of the ratios on/off.  The order of the servers rotates from
# round to round.  Both servers get --poll 0, so that CPU
# time is work and not adaptive polling's spinning, which would bury a
# difference this small.
#
# Usage: bench/stats-cost.sh   (not part of make check; 2 cores: run it
# when nobody else is measuring, and read the load it records)
# Environment: UBDKIT (default <repo>/ubdkit), BENCH_RUNTIME (seconds per
# run, default 10), BENCH_ROUNDS (default 5), BENCH_SIZE (default 256M),
# BENCH_OUT (results file, default bench/results/stats-DATE.md),
# UBDKIT_NOSTATS (optional, see above).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
UBDKIT=${UBDKIT:-$repo/ubdkit}
RUNTIME=${BENCH_RUNTIME:-10}
ROUNDS=${BENCH_ROUNDS:-5}
SIZE=${BENCH_SIZE:-256M}
OUT=${BENCH_OUT:-$here/results/stats-$(date -u +%F).md}
PY=/usr/bin/python3

die () { echo "stats-cost: $*" >&2; exit 1; }
[ -x "$UBDKIT" ] || die "$UBDKIT is not executable"
command -v fio >/dev/null || die "fio is not installed"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/stats-cost.XXXXXX")
pids=()
cleanup () {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

variants=(on off)
[ -n "${UBDKIT_NOSTATS:-}" ] && variants+=(compiled-out)
declare -A pid
for v in "${variants[@]}"; do
  bin=$UBDKIT env=()
  case $v in
    off) env=(UBDKIT_STATS=off) ;;
    compiled-out) bin=$UBDKIT_NOSTATS ;;
  esac
  env "${env[@]}" "$bin" serve -U "$scratch/$v.sock" --control "$scratch/$v.ctl" \
    --poll 0 memory size="$SIZE" 2>"$scratch/$v.log" &
  pid[$v]=$!
  pids+=($!)
done
for v in "${variants[@]}"; do
  for _ in $(seq 100); do [ -S "$scratch/$v.ctl" ] && break; sleep 0.05; done
  [ -S "$scratch/$v.ctl" ] || die "server $v did not start: $(cat "$scratch/$v.log")"
done

cpu_ticks () {
  local stat rest
  read -r stat <"/proc/$1/stat"
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $(( ${12} + ${13} ))
}
tick=$(getconf CLK_TCK)

fio_run () {   # VARIANT OUT ARGS...
  local v=$1 out=$2; shift 2
  fio --ioengine=nbd --uri="nbd+unix:///?socket=$scratch/$v.sock" \
    --name=j --group_reporting --output-format=json --output="$out" "$@" \
    >/dev/null 2>"$out.err" || die "fio failed on $v: $(cat "$out.err")"
}

# Reads of holes are answered without touching data: write it all first.
for v in "${variants[@]}"; do
  fio_run "$v" "$scratch/fill.json" --rw=write --bs=1M --iodepth=8 --size="$SIZE"
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=$scratch/rows.tsv
: >"$rows"
for w in qd1 qd32; do
  qd=${w#qd}
  for r in $(seq "$ROUNDS"); do
    # Each round starts with the next variant: whoever runs first after a
    # pause (CPU frequency, the scheduler's placement) must not always be
    # the same server.
    order=("${variants[@]:$(( r % ${#variants[@]} ))}" "${variants[@]:0:$(( r % ${#variants[@]} ))}")
    for v in "${order[@]}"; do
      out=$scratch/$w-$v-$r.json
      t0=$(cpu_ticks "${pid[$v]}")
      fio_run "$v" "$out" --rw=randread --bs=4k --iodepth="$qd" --norandommap \
        --time_based --runtime="$RUNTIME" --size="$SIZE"
      t1=$(cpu_ticks "${pid[$v]}")
      $PY - "$out" "$w" "$v" "$r" "$((t1 - t0))" "$tick" >>"$rows" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
rd = j["jobs"][0]["read"]
ios, iops = rd["total_ios"], rd["iops"]
cpu_us = int(sys.argv[5]) * 1e6 / int(sys.argv[6])
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], "%.0f" % iops,
                 "%.2f" % (cpu_us / ios if ios else 0), str(ios)]))
PY
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# The bumps alone (bench/stats-micro.c): ns per request, for a scale the
# end-to-end runs cannot resolve on a shared host.
cc -O2 -I "$repo/lib/core" -I "$repo" "$here/stats-micro.c" \
  "$repo/lib/core/stats.c" -o "$scratch/stats-micro" || die "cannot build stats-micro"
micro=$("$scratch/stats-micro") || die "stats-micro failed"
# The counters of "on" saw the requests: a sanity check that they count.
reads_on=$("$UBDKIT" stats --json "$scratch/on.ctl" |
  $PY -c 'import json, sys; print(json.load(sys.stdin)["exports"][0]["counters"]["requests"]["read"])')
ios_on=$(awk -F'\t' '$2 == "on" { s += $6 } END { print s }' "$rows")

$PY - "$rows" "$OUT" "$RUNTIME" "$ROUNDS" "$SIZE" "$load_before" "$load_after" \
  "$reads_on" "$ios_on" "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo ?)" \
  "$micro" \
  "${variants[@]}" <<'PY'
import statistics, sys, datetime, os
rows, out, runtime, rounds, size, lb, la, reads_on, ios_on, commit, micro = sys.argv[1:12]
variants = sys.argv[12:]
m_base, m_on, m_off = (float(x) for x in micro.split())
data = {}
for line in open(rows):
    w, v, r, iops, cpu, ios = line.split("\t")
    data.setdefault(w, {}).setdefault(int(r), {})[v] = (float(iops), float(cpu))
o = []
o.append("# Cost of the request counters, %s\n" % datetime.date.today())
o.append("bench/stats-cost.sh at %s: `ubdkit serve --poll 0 memory size=%s`, "
         "counters on vs UBDKIT_STATS=off%s, fio nbd engine over a Unix "
         "socket, 4k random reads, %s s per run, %s rounds taking turns.  "
         "Host: %d CPUs shared with other engineers; load average %s before, "
         "%s after.  Sanity: the \"on\" server counted %s reads beyond the "
         "fill; fio completed %s in its runs.\n"
         % (commit, size, " vs compiled out" if "compiled-out" in variants else "",
            runtime, rounds, os.cpu_count(), lb, la, reads_on, ios_on))
for w in data:
    o.append("\n## 4k randread %s\n" % w.upper())
    o.append("| round | " + " | ".join("%s IOPS | %s CPU µs/req" % (v, v) for v in variants)
             + " | IOPS on/off | CPU on/off |")
    o.append("|" + "---|" * (2 * len(variants) + 3))
    ri, rc = [], []
    for r in sorted(data[w]):
        d = data[w][r]
        i_ratio = d["on"][0] / d["off"][0]
        c_ratio = d["on"][1] / d["off"][1] if d["off"][1] else float("nan")
        ri.append(i_ratio); rc.append(c_ratio)
        o.append("| %d | " % r + " | ".join("%.0f | %.2f" % d[v] for v in variants)
                 + " | %.3f | %.3f |" % (i_ratio, c_ratio))
    o.append("\nMedian ratios on/off: IOPS %.3f, server CPU per request %.3f "
             "(spread of the IOPS ratio over rounds: %.3f to %.3f).\n"
             % (statistics.median(ri), statistics.median(rc), min(ri), max(ri)))
o.append("\n## The bumps alone (bench/stats-micro.c)\n")
o.append("One request's counting (stats_request + completed), in a loop of "
         "calls: %.2f ns per request with the counters on, %.2f with "
         "UBDKIT_STATS=off, %.2f for the empty call: the counting itself is "
         "%.2f ns per request.\n" % (m_on, m_off, m_base, m_on - m_base))
open(out, "w").write("\n".join(o))
print("\n".join(o))
PY
echo "results: $OUT"
