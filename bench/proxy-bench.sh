#!/usr/bin/env bash
# proxy-bench.sh: the cost of ubdkit as an NBD proxy (the nbd backend).
#
# fio (nbd engine, one Unix socket connection per job) runs the same
# workloads twice against nbdkit's memory plugin: directly, and through
# `ubdkit serve nbd uri=...` in front of the same nbdkit.  Reported per
# workload: IOPS direct and proxied, their ratio (proxied / direct), and the
# CPU time per request of the servers -- nbdkit alone when direct, nbdkit +
# ubdkit when proxied (utime+stime from /proc/PID/stat around each fio run,
# divided by the requests fio completed) -- with ubdkit's own share and the
# ratio of the totals.  A ratio of 1.00 IOPS and 1.00 CPU would be a free
# proxy; the CPU ratio is the better number on a small shared machine (fio
# competes with the servers for the cores, which caps IOPS).
#
# Usage: bench/proxy-bench.sh   (by hand, not part of make check)
# Environment:
#   UBDKIT=PATH            the ubdkit binary (default: <repo>/ubdkit)
#   BENCH_RUNTIME=S        seconds per workload and target (default 10)
#   BENCH_SIZE=SIZE        nbdkit memory size (default 1G)
#   BENCH_WORKLOADS="..."  subset of rr4k-qd1 rr4k-qd32 rw4k-qd32 rr4k-4x8
#                          sr1m-qd8 (default: all)
#   PROXY_ARGS="..."       extra nbd backend arguments (e.g. connections=2)
#   UBDKIT_ARGS="..."      extra ubdkit serve options (e.g. "-t 1")
#   BENCH_RESULTS=FILE     where the Markdown table goes (default:
#                          bench/results/proxy-DATE.md, never overwritten)
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${UBDKIT:=$top/ubdkit}"
: "${BENCH_RUNTIME:=10}"
: "${BENCH_SIZE:=1G}"
: "${BENCH_WORKLOADS:=rr4k-qd1 rr4k-qd32 rw4k-qd32 rr4k-4x8 sr1m-qd8}"
: "${PROXY_ARGS:=}"
: "${UBDKIT_ARGS:=}"

say () { printf '[proxy-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die () { say "ERROR: $*"; exit 2; }
for p in fio nbdkit nbdinfo /usr/bin/python3; do
  command -v "$p" >/dev/null || die "'$p' is not installed"
done
[ -x "$UBDKIT" ] || die "no ubdkit at $UBDKIT (run make)"
"$UBDKIT" --help 2>&1 | grep -q '^  nbd ' || die "ubdkit was built without libnbd"
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"

if [ -z "${BENCH_RESULTS:-}" ]; then
  BENCH_RESULTS=$top/bench/results/proxy-$(date -u +%F).md
  n=2
  while [ -e "$BENCH_RESULTS" ]; do
    BENCH_RESULTS=$top/bench/results/proxy-$(date -u +%F)-$n.md; n=$((n + 1))
  done
fi

dir=$(mktemp -d /tmp/proxy-bench.XXXXXX)
pids=()
finish () {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || :; done
  wait 2>/dev/null || :
  rm -rf "$dir"
}
trap finish EXIT

# Start a server in the background and wait for its socket to answer.
spawn () {
  local sock=$1; shift
  "$@" </dev/null >>"$dir/servers.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "$* did not start: $(tail -n 5 "$dir/servers.log")"
}

# CPU clock ticks used so far by the processes given.
ticks () {
  local sum=0 f
  for p in "$@"; do
    f=$(sed 's/.*) //' "/proc/$p/stat")
    sum=$(( sum + $(cut -d' ' -f12 <<<"$f") + $(cut -d' ' -f13 <<<"$f") ))
  done
  echo $sum
}

workload () {
  case $1 in
    rr4k-qd1)  echo "--rw=randread --bs=4k --iodepth=1" ;;
    rr4k-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
    rw4k-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
    rr4k-4x8)  echo "--rw=randread --bs=4k --iodepth=8 --numjobs=4" ;;
    sr1m-qd8)  echo "--rw=read --bs=1M --iodepth=8" ;;
    *) die "unknown workload $1" ;;
  esac
}

# measure URI NAME WORKLOAD PID...: prints "IOPS REQUESTS TICKS" for one run.
measure () {
  local uri=$1 name=$2 w=$3 t0 t1; shift 3
  t0=$(ticks "$@")
  # shellcheck disable=SC2046
  fio --ioengine=nbd --uri="$uri" --name="$w" $(workload "$w") \
      --norandommap --group_reporting --time_based --runtime="$BENCH_RUNTIME" \
      --output-format=json --output="$dir/$name.$w.json" >/dev/null 2>&1 ||
    die "fio failed on $name $w"
  t1=$(ticks "$@")
  /usr/bin/python3 - "$dir/$name.$w.json" $((t1 - t0)) <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
d = [x[k] for x in j["jobs"] for k in ("read", "write")]
if any(x["error"] for x in j["jobs"]):
    sys.exit("fio reported I/O errors")
print(sum(x["iops"] for x in d), sum(x["total_ios"] for x in d), sys.argv[2])
PY
}

nbdkit_sock=$dir/nbdkit.sock proxy_sock=$dir/proxy.sock
spawn "$nbdkit_sock" nbdkit -f -U "$nbdkit_sock" memory "$BENCH_SIZE"
nbdkit_pid=${pids[0]}
# shellcheck disable=SC2086
spawn "$proxy_sock" "$UBDKIT" serve -U "$proxy_sock" $UBDKIT_ARGS nbd \
  uri="nbd+unix:///?socket=$nbdkit_sock" $PROXY_ARGS
ubdkit_pid=${pids[1]}
direct="nbd+unix:///?socket=$nbdkit_sock" proxy="nbd+unix:///?socket=$proxy_sock"

say "prefill: one sequential write pass, so reads do not hit holes"
fio --ioengine=nbd --uri="$direct" --name=prefill --rw=write --bs=1M \
    --iodepth=8 >/dev/null 2>&1 || die "prefill failed"

hz=$(getconf CLK_TCK)
rows=()
for w in $BENCH_WORKLOADS; do
  say "$w: direct"
  read -r d_iops d_ios d_ticks <<<"$(measure "$direct" direct "$w" "$nbdkit_pid")"
  say "$w: through ubdkit"
  u0=$(ticks "$ubdkit_pid")
  read -r p_iops p_ios p_ticks <<<"$(measure "$proxy" proxy "$w" \
                                       "$nbdkit_pid" "$ubdkit_pid")"
  u_ticks=$(( $(ticks "$ubdkit_pid") - u0 ))
  rows+=("$(awk -v w="$w" -v di="$d_iops" -v dn="$d_ios" -v dt="$d_ticks" \
      -v pi="$p_iops" -v pn="$p_ios" -v pt="$p_ticks" -v ut="$u_ticks" \
      -v hz="$hz" 'BEGIN {
    dc = dt / hz * 1e6 / dn; pc = pt / hz * 1e6 / pn; uc = ut / hz * 1e6 / pn
    printf "| %s | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f |", w, di, pi,
      pi / di, dc, pc, uc, (dc > 0 ? pc / dc : 0) }')")
  say "${rows[-1]}"
done

{
  echo "# ubdkit as an NBD proxy in front of nbdkit memory"
  echo
  echo "- date: $(date -u '+%F %T UTC'); host: $(uname -r), $(nproc) CPUs;" \
       "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- ubdkit: $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown);" \
       "nbdkit $(nbdkit --version | cut -d' ' -f2); fio $(fio --version)"
  echo "- runtime ${BENCH_RUNTIME}s per workload and target; nbdkit memory $BENCH_SIZE;" \
       "proxy: ubdkit serve $UBDKIT_ARGS nbd uri=... $PROXY_ARGS"
  echo
  echo "| workload | IOPS direct | IOPS proxied | IOPS ratio | CPU µs/req direct (nbdkit) | CPU µs/req proxied (nbdkit+ubdkit) | of which ubdkit | CPU ratio |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} > "$BENCH_RESULTS"
say "results in $BENCH_RESULTS"
cat "$BENCH_RESULTS"
