#!/usr/bin/env bash
# rbd-bench.sh: a Ceph RBD image served over NBD by ubdkit's rbd backend
# and by qemu-nbd's rbd driver, side by side in one run, with fio's own
# rbd engine (librbd in fio's process, no server, no NBD) as the floor.
#
#   ubdkit    ubdkit serve -U SOCK rbd pool=rbd image=bench-ubdkit
#   qemu-nbd  qemu-nbd -k SOCK -t -e 8 --cache=writeback
#             --image-opts driver=rbd,pool=rbd,image=bench-qemu-nbd
#             (qemu-block-extra's rbd driver; --cache=writeback is
#             qemu-nbd's default, written out: it turns librbd's cache on,
#             as ubdkit leaves it, librbd's default)
#   fio-rbd   fio --ioengine=rbd --pool=rbd --rbdname=bench-fio-rbd: what
#             librbd does with no server in between, the ceiling for any
#             NBD server on top of it (in the style of bench/floor-server.c)
#
# rbd-nbd, Ceph's own NBD server, cannot be measured here: it serves only
# the kernel's NBD client (it attaches /dev/nbdN itself; it has no NBD
# socket of its own for fio's libnbd to connect to), and this machine's
# kernel has no nbd driver; bench/rbd-vm-bench.sh measures it in the test
# VM, against ubdkit's ublk device and ubdkit behind the kernel's NBD
# client.
#
# The cluster is tests/ceph/cluster.sh's: one monitor, one OSD, memstore
# by default, sized for the images (BENCH_STORE=bluestore: a sparse file on
# BENCH_TMPDIR's disk),
# on 127.0.0.1, started by this script and removed at the end.  Each server
# has its own image (BENCH_SIZE, default 1G), so librbd's exclusive lock
# never moves between them; each image gets a sequential 1 MiB write pass
# over its whole size first (not measured).  Then workload by workload,
# round by round, the three take turns (as in bench/filter-bench.sh), so
# noise that drifts over minutes falls on all of them.  fio's nbd engine
# (libnbd), one connection.  Reported per server and workload: IOPS, MiB/s,
# p99 completion latency, and the server's CPU time per request
# (utime+stime from /proc/PID/stat around the fio run, over the requests
# completed); fio's CPU per request (the client: fio and libnbd, or for
# fio-rbd fio and the whole of librbd, its threads included: the rusage
# of the fio process); the OSD's CPU per request, the part no server can
# remove; medians over the rounds; and the ratios ubdkit/qemu-nbd and
# ubdkit/fio-rbd, the last of them for the whole path's CPU (server and
# client) against fio-rbd's one process.
#
# Usage: bench/rbd-bench.sh        (not part of make check)
# Environment:
#   UBDKIT=PATH           the ubdkit binary (default <repo>/ubdkit)
#   BENCH_RUNTIME=S       seconds per workload (default 10)
#   BENCH_ROUNDS=N        turns per server and workload (default 3)
#   BENCH_SIZE=SIZE       image size (default 1G)
#   BENCH_SERVERS="..."   subset of: ubdkit qemu-nbd fio-rbd
#   BENCH_WORKLOADS="..." subset of: rr4k-qd32 rw4k-qd32 sr1m-qd8 sw1m-qd8
#   BENCH_STORE=memstore|bluestore  the OSD's object store (default memstore)
#   BENCH_TMPDIR=DIR      the cluster and sockets (default /var/tmp)
#   BENCH_RESULTS=FILE    report (default bench/results/rbd-DATE.md, with
#                         -2, -3, ... appended if it exists)
#   BENCH_KEEP=1          keep the scratch dir (fio JSON, logs, cluster)
#   UBDKIT_ARGS="..."     extra options for ubdkit serve
#
# Exit status: 0 if every workload ran on every server, 1 otherwise (the
# report is still written, with the failures marked), 2 if it could not
# start at all.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

: "${UBDKIT:=$top/ubdkit}"
: "${BENCH_RUNTIME:=10}"
: "${BENCH_ROUNDS:=3}"
: "${BENCH_SIZE:=1G}"
: "${BENCH_SERVERS:=ubdkit qemu-nbd fio-rbd}"
: "${BENCH_WORKLOADS:=rr4k-qd32 rw4k-qd32 sr1m-qd8 sw1m-qd8}"
: "${BENCH_STORE:=memstore}"
: "${BENCH_TMPDIR:=/var/tmp}"
: "${BENCH_KEEP:=0}"
: "${UBDKIT_ARGS:=}"

log () { printf '[rbd-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die () { log "ERROR: $*"; exit 2; }

for p in fio qemu-nbd nbdinfo rbd ceph-mon ceph-osd jq getconf numfmt /usr/bin/python3; do
  command -v "$p" >/dev/null 2>&1 || die "'$p' is not installed"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
[ -x "$UBDKIT" ] || die "$UBDKIT is not built"
[[ $BENCH_RUNTIME =~ ^[0-9]+$ && $BENCH_RUNTIME -gt 0 ]] ||
  die "BENCH_RUNTIME must be a positive integer"
[[ $BENCH_ROUNDS =~ ^[0-9]+$ && $BENCH_ROUNDS -gt 0 ]] ||
  die "BENCH_ROUNDS must be a positive integer"
size_bytes=$(numfmt --from=iec "$BENCH_SIZE") || die "bad BENCH_SIZE"
clk_tck=$(getconf CLK_TCK)
for s in $BENCH_SERVERS; do
  case $s in
    ubdkit|qemu-nbd) ;;
    fio-rbd) fio --enghelp=rbd >/dev/null 2>&1 || die "this fio has no rbd engine" ;;
    *) die "unknown server '$s'" ;;
  esac
done

scratch=$(mktemp -d "$BENCH_TMPDIR/rbd-bench.XXXXXX")
cluster=$scratch/cluster
declare -A cmd_of=() pid_of=() log_of=() uri_of=()
cluster_up=0
cleanup () {
  local st=$? p
  trap - EXIT INT TERM
  for p in "${pid_of[@]}"; do stop_pid "$p"; done
  [ "$cluster_up" = 1 ] && "$top/tests/ceph/cluster.sh" stop "$cluster" >/dev/null 2>&1
  if [ "$BENCH_KEEP" = 1 ]; then log "scratch kept in $scratch"
  else rm -rf "$scratch"; fi
  exit $st
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

log "starting a one-OSD cluster ($BENCH_STORE) in $cluster"
# memstore: room for every image, twice over (a full OSD blocks writes).
n_servers=$(wc -w <<<"$BENCH_SERVERS")
env_out=$(CLUSTER_MEMSTORE_BYTES=$(( 2 * n_servers * size_bytes + 268435456 )) \
          "$top/tests/ceph/cluster.sh" start "$cluster" --store "$BENCH_STORE") ||
  die "the cluster did not start"
cluster_up=1
eval "$env_out"
export CEPH_CONF CEPH_ARGS
osd_pid=$(cat "$cluster/run/osd.0.pid")

start () {
  local name=$1 sock=$scratch/$1.sock i
  local -a cmd
  # shellcheck disable=SC2206
  case $name in
    ubdkit) cmd=("$UBDKIT" serve -U "$sock" $UBDKIT_ARGS rbd pool=rbd image=bench-ubdkit) ;;
    qemu-nbd) cmd=(qemu-nbd -k "$sock" -t -e 8 --cache=writeback
                   --image-opts "driver=rbd,pool=rbd,image=bench-qemu-nbd,conf=$CEPH_CONF") ;;
  esac
  log_of[$name]=$scratch/$name.log
  launch "$name" "$sock" "${cmd[@]}"
}

for w in $BENCH_WORKLOADS; do workload_args "$w" >/dev/null || die "unknown workload '$w'"; done
fio_timeout=$(( BENCH_RUNTIME * 3 + 60 ))

# run_fio SERVER OUT FIO-ARGS...: fio's nbd engine against the server's
# socket, or fio's rbd engine on fio-rbd's image.
run_fio () {
  local s=$1 out=$2; shift 2
  local -a eng
  if [ "$s" = fio-rbd ]; then
    eng=(--ioengine=rbd --pool=rbd --rbdname=bench-fio-rbd --clientname=admin)
  else
    eng=(--ioengine=nbd "--uri=${uri_of[$s]}")
  fi
  # bash's time keyword: the rusage of fio and all its threads, as
  # "USER SYS" seconds in OUT.cpu.
  local TIMEFORMAT='%U %S' rc=0
  { time timeout --kill-after=10 "$fio_timeout" \
      fio "${eng[@]}" --group_reporting \
        --output-format=json --output="$out" "$@" >"$out.stdout" 2>"$out.stderr" || rc=$?
  } 2>"$out.cpu"
  return $rc
}

# fio_summary JSON: "IOPS BW_BYTES TOTAL_IOS P99_NS ERR".
fio_summary () {
  jq -r '[.jobs[] | .error] as $e
    | [.jobs[] | .read, .write | select(.total_ios > 0)] as $d
    | [ ($d | map(.iops) | add // 0), ($d | map(.bw_bytes) | add // 0),
        ($d | map(.total_ios) | add // 0),
        ($d | map(.clat_ns.percentile["99.000000"] // 0) | max // 0),
        ($e | add // 0) ] | @tsv' "$1"
}

results=$scratch/results.tsv  # server workload status iops mibs p99us cpuus cpupct osdus fious
: >"$results"
failures=0
notes=()

measure () {
  local s=$1 w=$2 r=$3 out c0=0 c1=0 o0 o1 t0 t1 rc=0 iops bw ios p99 err fcpu
  out=$scratch/$s.$w.$r.json
  [ "$s" = fio-rbd ] || c0=$(cpu_ticks "${pid_of[$s]}")
  o0=$(cpu_ticks "$osd_pid") t0=$(date +%s%N)
  # shellcheck disable=SC2046
  run_fio "$s" "$out" --name="$w" $(workload_args "$w") \
    --time_based --runtime="$BENCH_RUNTIME" || rc=$?
  t1=$(date +%s%N) o1=$(cpu_ticks "$osd_pid" || echo "$o0")
  if [ "$s" != fio-rbd ]; then
    if ! c1=$(cpu_ticks "${pid_of[$s]}") || ! server_alive "${pid_of[$s]}"; then
      notes+=("$s died during $w.")
      printf '%s\t%s\tserver-died\n' "$s" "$w" >>"$results"
      failures=$((failures + 1))
      unset "pid_of[$s]"
      return 0
    fi
  fi
  fcpu=$(awk 'NF == 2 { print $1 + $2 }' "$out.cpu" 2>/dev/null | tail -n 1)
  if ! read -r iops bw ios p99 err < <(fio_summary "$out" 2>/dev/null) || [ -z "${ios:-}" ]; then
    notes+=("$s: fio failed on $w (exit $rc): $(tail -n 1 "$out.stderr")")
    printf '%s\t%s\tfio-failed\n' "$s" "$w" >>"$results"
    failures=$((failures + 1))
    return 0
  fi
  local st=ok
  if [ "$rc" != 0 ] || [ "$err" != 0 ]; then
    st=io-errors
    notes+=("$s: fio reported errors on $w (exit $rc, error $err)")
    failures=$((failures + 1))
  fi
  awk -v s="$s" -v w="$w" -v st="$st" -v iops="$iops" -v bw="$bw" \
      -v ios="$ios" -v p99="$p99" -v dc=$((c1 - c0)) -v hz="$clk_tck" \
      -v fcpu="${fcpu:-0}" -v fio=$([ "$s" = fio-rbd ] && echo 1 || echo 0) \
      -v dosd=$((o1 - o0)) -v ns=$((t1 - t0)) 'BEGIN {
    cpu = dc / hz
    printf "%s\t%s\t%s\t%.0f\t%.1f\t%.0f\t%s\t%s\t%s\t%s\n", s, w, st, iops,
      bw / 1048576, p99 / 1000, (ios > 0 && !fio ? sprintf("%.2f", cpu * 1e6 / ios) : "-"),
      (fio ? "-" : sprintf("%.0f", 100 * cpu / (ns / 1e9))), (ios > 0 ? sprintf("%.2f", dosd / hz * 1e6 / ios) : "-"),
      (ios > 0 ? sprintf("%.2f", fcpu * 1e6 / ios) : "-") }' >>"$results"
  log "$s: $w round $r: $(tail -n 1 "$results" | cut -f4-)"
}

servers=()
for s in $BENCH_SERVERS; do
  log "creating rbd/bench-$s ($BENCH_SIZE)"
  rbd create --size "$(( size_bytes / 1048576 ))M" "rbd/bench-$s" ||
    die "rbd create rbd/bench-$s failed"
  if [ "$s" != fio-rbd ] && ! start "$s"; then
    notes+=("$s failed to start: $(head -n 3 "${log_of[$s]}" | tr '\n' ' ' | cut -c1-300)")
    failures=$((failures + 1))
    continue
  fi
  [ "$s" = fio-rbd ] && cmd_of[$s]="fio --ioengine=rbd --pool=rbd --rbdname=bench-fio-rbd --clientname=admin"
  servers+=("$s")
  log "$s: prefill"
  run_fio "$s" "$scratch/$s.prefill.json" --name=prefill --rw=write --bs=1M --iodepth=8 ||
    { notes+=("$s: the prefill pass failed"); failures=$((failures + 1)); }
done

ubdkit_rev=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
ubdkit_bin="$(sha256sum "$UBDKIT" | cut -c1-12), built $(date -u -r "$UBDKIT" '+%Y-%m-%d %H:%M:%S UTC')"
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)

for w in $BENCH_WORKLOADS; do
  for (( round = 1; round <= BENCH_ROUNDS; round++ )); do
    for s in "${servers[@]}"; do
      [ "$s" = fio-rbd ] || [ -n "${pid_of[$s]:-}" ] || continue
      measure "$s" "$w" "$round"
    done
  done
done

stop_all_and_note "${servers[@]}"

table=$scratch/table.tsv
medians "$results" %.0f %.1f %.0f %.2f %.0f %.2f %.2f >"$table"
t_end=$(date +%s)
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)

report () {
  local s
  echo "# Ceph RBD over NBD: ubdkit vs qemu-nbd, with librbd alone as the floor"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| kernel | $(uname -r) |"
  echo "| nproc | $(nproc) |"
  echo "| ubdkit | $ubdkit_rev; binary sha256 $ubdkit_bin |"
  echo "| librbd / ceph-osd | $(pkgver librbd1) / $(pkgver ceph-osd) |"
  echo "| qemu-nbd (rbd driver: qemu-block-extra) | $(pkgver qemu-utils) / $(pkgver qemu-block-extra) |"
  echo "| fio / libnbd | $(pkgver fio) / $(pkgver libnbd0) |"
  echo "| cluster | tests/ceph/cluster.sh: 1 monitor, 1 OSD ($BENCH_STORE), pool size 1, 127.0.0.1, on the same machine |"
  echo "| runtime per workload | ${BENCH_RUNTIME} s, $BENCH_ROUNDS rounds (medians; servers taking turns) |"
  echo "| image size | $BENCH_SIZE each, written once before the workloads |"
  echo "| load average start / end | $loadavg_start / $loadavg_end |"
  echo "| wall time (workloads) | $(( t_end - t_start )) s |"
  echo
  echo "Servers:"
  echo
  for s in "${servers[@]}"; do echo "- $s: \`${cmd_of[$s]:-(not run)}\`"; done
  echo
  echo "fio: \`fio --ioengine=nbd --uri=nbd+unix:///?socket=SOCK --time_based --runtime=$BENCH_RUNTIME --group_reporting\` and the workload's options, one connection (fio-rbd: the rbd engine instead)."
  echo "rbd-nbd is not in the table: it serves only the kernel's NBD client, which this machine's kernel lacks; bench/rbd-vm-bench.sh measures it in the test VM (docs/ceph.md)."
  echo
  echo "## Ratios"
  echo
  echo "IOPS: above 1, ubdkit is faster.  CPU/req: below 1, ubdkit is cheaper.  Server CPU/req is the server process's; path CPU/req against fio-rbd is ubdkit's server plus its fio client (fio, libnbd) over fio-rbd's one process (fio, librbd)."
  echo
  echo "| workload | IOPS ubdkit/qemu-nbd | server CPU/req ubdkit/qemu-nbd | IOPS ubdkit/fio-rbd | path CPU/req ubdkit/fio-rbd |"
  echo "|---|--:|--:|--:|--:|"
  awk -F'\t' -v wl="$BENCH_WORKLOADS" -v d="$(descs)" '
    BEGIN { n = split(d, dd, "|"); for (i = 1; i <= n; i++) { split(dd[i], kv, "="); desc[kv[1]] = kv[2] } }
    $3 == "ok" { iops[$1, $2] = $4; cpu[$1, $2] = $7; fcpu[$1, $2] = $10 }
    function r(a, b) { return (a != "" && b != "" && a != "-" && b != "-" && b + 0 > 0) ? sprintf("%.2f", a / b) : "n/a" }
    END { nw = split(wl, w, " ")
      for (j = 1; j <= nw; j++)
        printf "| %s | %s | %s | %s | %s |\n", desc[w[j]], r(iops["ubdkit", w[j]], iops["qemu-nbd", w[j]]),
          r(cpu["ubdkit", w[j]], cpu["qemu-nbd", w[j]]), r(iops["ubdkit", w[j]], iops["fio-rbd", w[j]]),
          (cpu["ubdkit", w[j]] != "" && fcpu["ubdkit", w[j]] != "" ? r(cpu["ubdkit", w[j]] + fcpu["ubdkit", w[j]], fcpu["fio-rbd", w[j]]) : "n/a") }' "$table"
  echo
  echo "## Results"
  echo
  echo "| server | workload | IOPS | MiB/s | p99 clat (µs) | srv CPU/req (µs) | srv CPU% | fio CPU/req (µs) | OSD CPU/req (µs) |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|"
  awk -F'\t' -v d="$(descs)" '
    BEGIN { n = split(d, dd, "|"); for (i = 1; i <= n; i++) { split(dd[i], kv, "="); desc[kv[1]] = kv[2] } }
    $3 == "ok" || $3 == "io-errors" {
      printf "| %s | %s%s | %s | %s | %s | %s | %s%s | %s | %s |\n", $1, desc[$2],
        ($3 == "ok" ? "" : " **(I/O errors)**"), $4, $5, $6, $7, $8, ($8 == "-" ? "" : "%"), $10, $9; next }
    { printf "| %s | %s | %s | | | | | | |\n", $1, desc[$2], toupper($3) }' "$table"
  if [ ${#notes[@]} -gt 0 ]; then
    echo
    echo "## Notes from this run"
    echo
    local n
    for n in "${notes[@]}"; do echo "- $n"; done
  fi
}

BENCH_RESULTS=$(results_file rbd)
report | tee "$BENCH_RESULTS"
log "results written to $BENCH_RESULTS"
[ "$failures" = 0 ]
