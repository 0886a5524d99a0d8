#!/usr/bin/env bash
# nbd-bench.sh: compare ubdkit's NBD server against nbdkit and qemu-nbd.
#
# Runs the same six fio workloads (fio's "nbd" engine, i.e. libnbd in the
# client, over a Unix socket) against these servers.  All of them run side
# by side from the start; workload by workload, they take turns (and with
# BENCH_ROUNDS=N, N turns each, reported as medians), so host noise that
# drifts over minutes falls on all of them alike:
#
#   ubdkit-memory   ubdkit serve -U SOCK memory size=1G
#   ubdkit-memory-nopoll   the same with --poll 0 (no adaptive polling: the
#                   CPU cost of polling shows as the difference)
#   ubdkit-file     ubdkit serve -U SOCK file file=FILE
#   nbdkit-memory   nbdkit -f -U SOCK memory 1G
#   nbdkit-file     nbdkit -f -U SOCK file FILE
#   qemu-nbd        qemu-nbd -k SOCK -f raw -e 8 -t --cache=writeback --aio=threads FILE
#   floor-memory    bench/floor-server SOCK SIZE: not a server anyone would
#                   run, the least an NBD server can do per request (blocking
#                   read of every request that has arrived, one writev of all
#                   the replies straight from memory).  Its CPU per request is
#                   the floor on this host and client; the others are read
#                   against it.
#
# FILE is one 1 GiB file of random data on local disk, shared by the three
# file servers (only one runs fio at a time).  All three go through the host page cache
# (qemu-nbd's default cache=writeback, nbdkit file's cache=default), so with
# the file warm the file workloads measure the server, not the disk.
#
# Every server gets a sequential 1 MiB write pass over the whole device
# before its workloads, so reads never hit holes (memory backends return
# zeroes for unwritten areas much faster than real data).
#
# Reported per server and workload: IOPS, MiB/s, p99 completion latency (from
# fio's JSON), and the SERVER's CPU time per request: utime+stime of the
# server process (/proc/PID/stat fields 14 and 15, in CLK_TCK ticks, which
# include threads that have already exited) read just before and just after
# fio, divided by the number of requests fio completed.
#
# THE MACHINE HAS 2 CORES.  fio (the client) and the server compete for them,
# and on a shared machine other tenants do too.  IOPS and MiB/s are therefore
# capped by the client's own CPU cost and are noisy; CPU time per request is
# the server's own cost and is less sensitive to that contention, so it is
# the number to compare (not immune, though: QD1 wake-up costs depend on
# whether the scheduler puts fio and the server on the same CPU; see
# bench/README.md).  Nothing is pinned with taskset: pinning the
# server to one core and fio to the other would cap a multi-threaded server
# (ubdkit runs one loop per core, nbdkit a thread pool, qemu-nbd an I/O thread
# pool) at one core and would measure the pinning, not the server.  Set
# BENCH_PIN=1 to pin anyway (server on CPU 0, fio on CPU 1) for an
# experiment; the results file records it.
#
# Usage: bench/nbd-bench.sh            (from anywhere; not part of make check)
# Environment:
#   UBDKIT=PATH          the ubdkit binary (default: <repo>/ubdkit)
#   BENCH_RUNTIME=S      seconds per workload (default 10)
#   BENCH_SIZE=SIZE      device size, fio/nbdkit syntax (default 1G)
#   BENCH_SERVERS="..."  subset of: ubdkit-memory ubdkit-memory-nopoll
#                        ubdkit-file nbdkit-memory
#                        nbdkit-file qemu-nbd floor-memory (default: all,
#                        in that order)
#   BENCH_WORKLOADS="..." subset of: rr4k-qd1 rr4k-qd32 rr4k-4x8 rw4k-qd32
#                        sr1m-qd8 sw1m-qd8 (default: all)
#   BENCH_TMPDIR=DIR     where the 1 GiB file and sockets go; must be local
#                        disk, not tmpfs (default /var/tmp)
#   BENCH_RESULTS=FILE   results file (default bench/results/nbd-DATE.md,
#                        with -2, -3, ... appended if it exists)
#   BENCH_KEEP=1         keep the scratch dir (fio JSON, server logs)
#   UBDKIT_ARGS="..."    extra options for ubdkit serve (e.g. "-t 1")
#   BENCH_PIN=1          pin server to CPU 0 and fio to CPU 1 (see above)
#   BENCH_ROUNDS=N       run every workload N times per server, the servers
#                        taking turns, and report medians (default 1)
#
# Exit status: 0 if every workload on every server ran, 1 otherwise (the
# table is still written, with the failures marked).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)

: "${UBDKIT:=$top/ubdkit}"
: "${BENCH_RUNTIME:=10}"
: "${BENCH_SIZE:=1G}"
: "${BENCH_SERVERS:=ubdkit-memory ubdkit-memory-nopoll ubdkit-file nbdkit-memory nbdkit-file qemu-nbd floor-memory}"
: "${BENCH_WORKLOADS:=rr4k-qd1 rr4k-qd32 rr4k-4x8 rw4k-qd32 sr1m-qd8 sw1m-qd8}"
: "${BENCH_TMPDIR:=/var/tmp}"
: "${BENCH_KEEP:=0}"
: "${UBDKIT_ARGS:=}"
: "${BENCH_PIN:=0}"
: "${BENCH_ROUNDS:=1}"

log () { printf '[nbd-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die () { log "ERROR: $*"; exit 2; }

for p in fio nbdkit qemu-nbd nbdinfo getconf; do
  command -v "$p" >/dev/null 2>&1 || die "'$p' is not installed"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine"
if command -v jq >/dev/null 2>&1; then json=jq
elif [ -x /usr/bin/python3 ]; then json=python3
else die "need jq or /usr/bin/python3 to read fio's JSON"; fi

[[ $BENCH_RUNTIME =~ ^[0-9]+$ && $BENCH_RUNTIME -gt 0 ]] ||
  die "BENCH_RUNTIME must be a positive integer"
[[ $BENCH_ROUNDS =~ ^[0-9]+$ && $BENCH_ROUNDS -gt 0 ]] ||
  die "BENCH_ROUNDS must be a positive integer"
[ "$BENCH_ROUNDS" = 1 ] || [ -x /usr/bin/python3 ] ||
  die "BENCH_ROUNDS > 1 needs /usr/bin/python3 (for the medians)"

clk_tck=$(getconf CLK_TCK)

# Pinning (off by default; see the comment at the top).
srv_pin=() fio_pin=()
if [ "$BENCH_PIN" = 1 ]; then
  command -v taskset >/dev/null || die "BENCH_PIN=1 needs taskset"
  srv_pin=(taskset -c 0) fio_pin=(taskset -c 1)
fi

# ---------------------------------------------------------------- scratch
scratch=$(mktemp -d "$BENCH_TMPDIR/nbd-bench.XXXXXX")
datafile=$scratch/disk.img
server_pid=
stop_note=
declare -A server_cmds=() pid_of=() log_of=() uri_of=() up=()
cleanup () {
  local st=$?
  trap - EXIT INT TERM
  stop_server
  for server_pid in "${pid_of[@]}"; do stop_server; done
  if [ "$BENCH_KEEP" = 1 ]; then
    log "scratch kept in $scratch"
  else
    rm -rf "$scratch"
  fi
  exit $st
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- servers
# stop_server: SIGTERM the current server, SIGKILL it after 10 s.
stop_server () {
  local pid=$server_pid i
  [ -n "$pid" ] || return 0
  server_pid=
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < 100; i++ )); do
    server_alive "$pid" || break
    sleep 0.1
  done
  if server_alive "$pid"; then
    log "server $pid ignored SIGTERM for 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    stop_note="did not exit within 10 s of SIGTERM (killed)"
  fi
  wait "$pid" 2>/dev/null || true
}

# start_server NAME: start server NAME on a fresh socket in the background,
# wait until it answers an NBD handshake.  Sets server_pid, uri, srvlog.
start_server () {
  local name=$1 sock=$scratch/$1.sock i
  local -a cmd
  rm -f "$sock"
  srvlog=$scratch/$name.log
  uri="nbd+unix:///?socket=$sock"
  case $name in
    ubdkit-memory)
      # shellcheck disable=SC2206
      cmd=("$UBDKIT" serve -U "$sock" $UBDKIT_ARGS memory "size=$BENCH_SIZE") ;;
    ubdkit-memory-nopoll)
      # shellcheck disable=SC2206
      cmd=("$UBDKIT" serve -U "$sock" --poll 0 $UBDKIT_ARGS memory "size=$BENCH_SIZE") ;;
    ubdkit-file)
      # shellcheck disable=SC2206
      cmd=("$UBDKIT" serve -U "$sock" $UBDKIT_ARGS file "file=$datafile") ;;
    nbdkit-memory)
      cmd=(nbdkit -f --exit-with-parent -U "$sock" memory "$BENCH_SIZE") ;;
    nbdkit-file)
      cmd=(nbdkit -f --exit-with-parent -U "$sock" file "$datafile") ;;
    qemu-nbd)
      # -e 8: up to 8 simultaneous clients (the 4-connection workload);
      # -t: don't exit when the last client disconnects (fio reconnects
      # for every workload).  cache=writeback and aio=threads are
      # qemu-nbd's defaults, spelled out so the results say what ran.
      cmd=(qemu-nbd -k "$sock" -f raw -e 8 -t --cache=writeback
           --aio=threads "$datafile") ;;
    floor-memory)
      if [ ! -x "$scratch/floor-server" ]; then
        ${CC:-cc} -O2 -pthread -o "$scratch/floor-server" \
          "$here/floor-server.c" || { log "cannot build floor-server"; return 1; }
      fi
      cmd=("$scratch/floor-server" "$sock" "$(numfmt --from=iec "$BENCH_SIZE")") ;;
    *) die "unknown server '$name'" ;;
  esac
  server_cmd="${cmd[*]}"
  server_cmds[$name]=$server_cmd
  log "starting $name: $server_cmd"
  "${srv_pin[@]}" "${cmd[@]}" </dev/null >"$srvlog" 2>&1 &
  server_pid=$!
  for (( i = 0; i < 300; i++ )); do          # up to 30 s
    if ! server_alive "$server_pid"; then
      wait "$server_pid" 2>/dev/null || true
      server_pid=
      log "$name exited during startup; its log:"; sed 's/^/    /' "$srvlog" >&2
      return 1
    fi
    if [ -S "$sock" ] && nbdinfo --size "$uri" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  log "$name did not answer on $sock within 30 s; its log:"
  sed 's/^/    /' "$srvlog" >&2
  stop_server
  return 1
}

# server_alive PID: the process exists and is not a zombie (a killed server
# stays a zombie until we wait for it, and kill -0 succeeds on zombies).
server_alive () {
  local stat
  # (not $(<file): under set -e a failed $(<file) exits the script)
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

# cpu_ticks PID: utime+stime of the whole process, in clock ticks.  The
# command name (field 2) may contain spaces, so split after the last ')'.
cpu_ticks () {
  local stat rest
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  rest=${stat##*) }
  # shellcheck disable=SC2086
  # rest starts at field 3 (state); utime/stime are fields 14/15 -> 12/13.
  set -- $rest
  echo $(( ${12} + ${13} ))
}

# ---------------------------------------------------------------- fio
# workload_args NAME: fio options for workload NAME.
workload_args () {
  case $1 in
    rr4k-qd1)  echo "--rw=randread  --bs=4k --iodepth=1  --numjobs=1 --norandommap" ;;
    rr4k-qd32) echo "--rw=randread  --bs=4k --iodepth=32 --numjobs=1 --norandommap" ;;
    rr4k-4x8)  echo "--rw=randread  --bs=4k --iodepth=8  --numjobs=4 --norandommap" ;;
    rw4k-qd32) echo "--rw=randwrite --bs=4k --iodepth=32 --numjobs=1 --norandommap" ;;
    sr1m-qd8)  echo "--rw=read      --bs=1M --iodepth=8  --numjobs=1" ;;
    sw1m-qd8)  echo "--rw=write     --bs=1M --iodepth=8  --numjobs=1" ;;
    *) return 1 ;;
  esac
}
workload_desc () {
  case $1 in
    rr4k-qd1)  echo "4k rand read QD1" ;;
    rr4k-qd32) echo "4k rand read QD32" ;;
    rr4k-4x8)  echo "4k rand read 4 conn x QD8" ;;
    rw4k-qd32) echo "4k rand write QD32" ;;
    sr1m-qd8)  echo "1M seq read QD8" ;;
    sw1m-qd8)  echo "1M seq write QD8" ;;
  esac
}

# fio_summary JSONFILE: prints "IOPS BW_BYTES TOTAL_IOS P99_NS ERR MAX_NS", summed
# over jobs and directions (each workload is one direction; p99 is the
# largest over jobs, and group_reporting makes that one job anyway).
fio_summary () {
  if [ "$json" = jq ]; then
    jq -r '[.jobs[] | .error] as $e
      | [.jobs[] | .read, .write | select(.total_ios > 0)] as $d
      | [ ($d | map(.iops) | add // 0),
          ($d | map(.bw_bytes) | add // 0),
          ($d | map(.total_ios) | add // 0),
          ($d | map(.clat_ns.percentile["99.000000"] // 0) | max // 0),
          ($e | add // 0),
          ($d | map(.clat_ns.max // 0) | max // 0) ] | @tsv' "$1"
  else
    /usr/bin/python3 - "$1" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
d = [jb[k] for jb in j["jobs"] for k in ("read", "write") if jb[k]["total_ios"] > 0]
p99 = max([x.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0) for x in d] or [0])
print("\t".join(str(v) for v in (
    sum(x["iops"] for x in d), sum(x["bw_bytes"] for x in d),
    sum(x["total_ios"] for x in d), p99, sum(jb["error"] for jb in j["jobs"]),
    max([x.get("clat_ns", {}).get("max", 0) for x in d] or [0]))))
EOF
  fi
}

# fio JSON goes to a file (--output): the nbd engine prints "connected to
# NBD server" on stdout, which would corrupt JSON on stdout.
run_fio () {
  local out=$1; shift
  "${fio_pin[@]}" timeout --kill-after=10 "$fio_timeout" \
    fio --ioengine=nbd --uri="$uri" --group_reporting \
        --output-format=json --output="$out" "$@" \
        >"$out.stdout" 2>"$out.stderr"
}
fio_timeout=$(( BENCH_RUNTIME * 3 + 60 ))

# ---------------------------------------------------------------- main
results=$scratch/results.tsv     # server workload status iops mibs p99us cpuus cpupct ios
: >"$results"
failures=0
notes=()

if [[ " $BENCH_SERVERS " == *" ubdkit-"* && ! -x $UBDKIT ]]; then
  log "WARNING: $UBDKIT not found or not executable: skipping ubdkit servers"
  notes+=("ubdkit binary $UBDKIT was missing: ubdkit servers were skipped.")
  ubdkit_missing=1
else
  ubdkit_missing=0
fi

if [[ " $BENCH_SERVERS " == *"-file "* || " $BENCH_SERVERS " == *" qemu-nbd "* ]]; then
  fstype=$(findmnt -n -o FSTYPE -T "$scratch" 2>/dev/null || stat -f -c %T "$scratch")
  [ "$fstype" = tmpfs ] && log "WARNING: $scratch is on tmpfs, not local disk"
  log "writing $BENCH_SIZE of random data to $datafile ($fstype)"
  size_bytes=$(numfmt --from=iec "$BENCH_SIZE")
  head -c "$size_bytes" /dev/urandom >"$datafile"
  sync "$datafile"
fi

# Which ubdkit ran: the revision and binary at the start.  The binary is
# checked again before each ubdkit server starts, so a rebuild in the middle
# of a run (make in another shell) is reported rather than silently mixed in.
ubdkit_rev=$(git -C "$top" describe --always --dirty 2>/dev/null) ||
  ubdkit_rev="unknown (not a git checkout or no commits)"
ubdkit_bin=
if [ "$ubdkit_missing" = 0 ] && [ -x "$UBDKIT" ]; then
  ubdkit_sum=$(sha256sum "$UBDKIT" | cut -c1-12)
  ubdkit_bin="$ubdkit_sum, built $(date -u -r "$UBDKIT" '+%Y-%m-%d %H:%M:%S UTC')"
fi

loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)

# measure SERVER WORKLOAD ARGS: one fio run of WORKLOAD on SERVER (up, at
# $uri), one row in $results.  Returns 1 if the server died.
measure () {
  local server=$1 w=$2 args=$3 out rc c0 c1 t0 t1 summary
  local iops bw ios p99 err maxns status
  out=$scratch/$server.$w.$round.json
  log "$server: $w ($(workload_desc "$w"), ${BENCH_RUNTIME}s, round $round)"
  c0=$(cpu_ticks "$server_pid")
  t0=$(date +%s%N)
  rc=0
  # shellcheck disable=SC2086
  run_fio "$out" --name="$w" $args --time_based --runtime="$BENCH_RUNTIME" || rc=$?
  t1=$(date +%s%N)
  c1=
  server_alive "$server_pid" && c1=$(cpu_ticks "$server_pid" 2>/dev/null)
  if [ -z "$c1" ]; then
    log "$server: server died during $w; its log:"; sed 's/^/    /' "$srvlog" >&2
    notes+=("$server died during $w.")
    printf '%s\t%s\tserver-died\n' "$server" "$w" >>"$results"
    failures=$((failures + 1))
    return 1
  fi
  if [ "$rc" = 124 ] ||
     { [ "$rc" = 137 ] && [ $(( (t1 - t0) / 1000000000 )) -ge "$fio_timeout" ]; }; then
    log "$server: fio timed out after ${fio_timeout}s on $w (stall?)"
    notes+=("$server: fio timed out (${fio_timeout}s) on $w: the server stalled.")
    printf '%s\t%s\ttimeout\n' "$server" "$w" >>"$results"
    failures=$((failures + 1))
    return 0
  fi
  if ! summary=$(fio_summary "$out" 2>/dev/null) || [ -z "$summary" ]; then
    log "$server: fio failed on $w (exit $rc); stderr:"
    tail -n 5 "$out.stderr" | sed 's/^/    /' >&2
    notes+=("$server: fio failed on $w (exit $rc): $(tail -n 1 "$out.stderr")")
    printf '%s\t%s\tfio-failed\n' "$server" "$w" >>"$results"
    failures=$((failures + 1))
    return 0
  fi
  read -r iops bw ios p99 err maxns <<<"$summary"
  if awk -v m="$maxns" 'BEGIN { exit !(m >= 5e8) }'; then
    notes+=("$server: $w: slowest request took $(awk -v m="$maxns" 'BEGIN { printf "%.0f", m / 1e6 }') ms (a stall?).")
  fi
  status=ok
  if [ "$rc" != 0 ] || [ "$err" != 0 ]; then
    status=io-errors
    notes+=("$server: fio reported errors on $w (exit $rc, error $err): $(tail -n 1 "$out.stderr")")
    failures=$((failures + 1))
  fi
  awk -v s="$server" -v w="$w" -v st="$status" -v iops="$iops" -v bw="$bw" \
      -v ios="$ios" -v p99="$p99" -v dc=$((c1 - c0)) -v hz="$clk_tck" \
      -v ns=$((t1 - t0)) 'BEGIN {
    cpu = dc / hz;                               # server CPU seconds
    printf "%s\t%s\t%s\t%.0f\t%.1f\t%.0f\t%s\t%.0f\t%d\n", s, w, st, iops,
      bw / 1048576, p99 / 1000,
      (ios > 0 ? sprintf("%.2f", cpu * 1e6 / ios) : "-"),
      100 * cpu / (ns / 1e9), ios }' >>"$results"
  log "$server: $w: $(tail -n 1 "$results" | cut -f4-)"
}

# Start every server and fill its device once.  They then run side by side,
# each idle but for its turns (an idle ubdkit, nbdkit or qemu-nbd takes no
# CPU).
for server in $BENCH_SERVERS; do
  if [[ $server == ubdkit-* && $ubdkit_missing = 1 ]]; then
    for w in $BENCH_WORKLOADS; do
      printf '%s\t%s\tskipped\n' "$server" "$w" >>"$results"
    done
    continue
  fi
  if [[ $server == ubdkit-* && -n $ubdkit_bin ]] &&
     [ "$(sha256sum "$UBDKIT" 2>/dev/null | cut -c1-12)" != "$ubdkit_sum" ]; then
    log "WARNING: $UBDKIT changed since the run started"
    notes+=("$UBDKIT was rebuilt during the run, before $server started: its rows are not from the binary named in the header.")
  fi
  if ! start_server "$server"; then
    failures=$((failures + 1))
    notes+=("$server failed to start: $(head -n 3 "$srvlog" | tr '\n' ' ' | cut -c1-300)")
    for w in $BENCH_WORKLOADS; do
      printf '%s\t%s\tno-start\n' "$server" "$w" >>"$results"
    done
    continue
  fi
  pid_of[$server]=$server_pid log_of[$server]=$srvlog uri_of[$server]=$uri
  up[$server]=1
  server_pid=
  log "$server: prefill (sequential 1 MiB writes over the whole device)"
  if ! run_fio "$scratch/$server.prefill.json" --name=prefill --rw=write \
         --bs=1M --iodepth=8; then
    log "$server: prefill failed"
    notes+=("$server: prefill write pass failed: $(tail -n 1 "$scratch/$server.prefill.json.stderr")")
    failures=$((failures + 1))
  fi
done

# Workload by workload, round by round, the servers take turns: host noise
# that drifts over minutes then falls on every server alike, and with
# BENCH_ROUNDS > 1 the report gives each server's median.
for w in $BENCH_WORKLOADS; do
  args=$(workload_args "$w") || die "unknown workload '$w'"
  for (( round = 1; round <= BENCH_ROUNDS; round++ )); do
    for server in $BENCH_SERVERS; do
      [ -n "${pid_of[$server]:-}" ] || continue
      if [ -z "${up[$server]:-}" ] || ! server_alive "${pid_of[$server]}"; then
        up[$server]=
        [ "$round" = 1 ] && printf '%s\t%s\tserver-died\n' "$server" "$w" >>"$results"
        continue
      fi
      server_pid=${pid_of[$server]} srvlog=${log_of[$server]} uri=${uri_of[$server]}
      measure "$server" "$w" "$args" || up[$server]=
      server_pid=
    done
  done
done

for server in $BENCH_SERVERS; do
  [ -n "${pid_of[$server]:-}" ] || continue
  server_pid=${pid_of[$server]} stop_note=
  stop_server
  [ -n "$stop_note" ] && notes+=("$server $stop_note.")
  # Servers' warnings and errors (ubdkit also logs informational lines).
  while IFS= read -r line; do
    notes+=("$server logged: \`${line:0:240}\`")
  done < <(grep -aiE 'warn|error|fail|fatal|abort|assert|timeout|timed out|stall' "${log_of[$server]}" |
           awk '!seen[$0]++' | head -n 8)
done
pid_of=()

# One row per server and workload: the median of each number over the
# rounds, and the IOPS range (min max) in two more columns; a workload that
# failed in any round keeps its first failure's status.
table=$scratch/table.tsv
if [ "$BENCH_ROUNDS" = 1 ]; then
  awk -F'\t' -v OFS='\t' '{ print $0, $4, $4 }' "$results" >"$table"
else
  /usr/bin/python3 - "$results" >"$table" <<'EOF'
import statistics, sys
rows = {}
order = []
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    k = (f[0], f[1])
    if k not in rows:
        rows[k] = []
        order.append(k)
    rows[k].append(f)
for k in order:
    rs = rows[k]
    bad = [r for r in rs if r[2] not in ("ok", "io-errors")]
    if bad:
        print("\t".join(bad[0][:3]))
        continue
    def med(i, fmt):
        v = [float(r[i]) for r in rs if r[i] not in ("", "-")]
        return fmt % statistics.median(v) if v else "-"
    st = "io-errors" if any(r[2] == "io-errors" for r in rs) else "ok"
    iops = [float(r[3]) for r in rs]
    print("\t".join([k[0], k[1], st, med(3, "%.0f"), med(4, "%.1f"),
                     med(5, "%.0f"), med(6, "%.2f"), med(7, "%.0f"),
                     med(8, "%.0f"), "%.0f" % min(iops), "%.0f" % max(iops)]))
EOF
fi

t_end=$(date +%s)
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
pkgver () { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }

report () {
  local s w
  echo "# NBD benchmark: ubdkit vs nbdkit vs qemu-nbd"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| kernel | $(uname -r) |"
  echo "| nproc | $(nproc) |"
  echo "| CPU | $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1) |"
  echo "| ubdkit | $ubdkit_rev (git describe at start)${ubdkit_bin:+; binary sha256 $ubdkit_bin} |"
  echo "| nbdkit | $(pkgver nbdkit) |"
  echo "| qemu-utils | $(pkgver qemu-utils) |"
  echo "| fio | $(pkgver fio) |"
  echo "| libnbd | $(pkgver libnbd0) |"
  echo "| runtime per workload | ${BENCH_RUNTIME} s |"
  echo "| rounds | $BENCH_ROUNDS (servers run side by side and take turns, workload by workload; figures are medians over the rounds) |"
  echo "| device size | $BENCH_SIZE |"
  echo "| file backend | ${fstype:-n/a} in $BENCH_TMPDIR, page cache (buffered) |"
  echo "| pinning | $([ "$BENCH_PIN" = 1 ] && echo 'server CPU 0, fio CPU 1' || echo none) |"
  echo "| load average start / end | $loadavg_start / $loadavg_end |"
  echo "| wall time | $(( t_end - t_start )) s |"
  echo
  echo "Servers:"
  echo
  for s in $BENCH_SERVERS; do
    echo "- $s: \`${server_cmds[$s]:-(not run)}\`"
  done
  echo
  echo "fio: \`fio --ioengine=nbd --uri=nbd+unix:///?socket=SOCK --time_based --runtime=$BENCH_RUNTIME --group_reporting\` plus the workload's options; the client and server share the machine's $(nproc) CPUs."
  echo
  echo "## Results"
  echo
  echo "srv CPU/req = server utime+stime during the workload / requests completed. srv CPU% = server CPU time / wall time (200% = both cores)."
  echo
  echo "| server | workload | IOPS | MiB/s | p99 clat (µs) | srv CPU/req (µs) | srv CPU% | IOPS min-max |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|"
  awk -F'\t' -v wl="$BENCH_WORKLOADS" '
    BEGIN { n = split("rr4k-qd1 rr4k-qd32 rr4k-4x8 rw4k-qd32 sr1m-qd8 sw1m-qd8", k, " ")
      split("4k rand read QD1|4k rand read QD32|4k rand read 4 conn x QD8|4k rand write QD32|1M seq read QD8|1M seq write QD8", d, "|")
      for (i = 1; i <= n; i++) desc[k[i]] = d[i] }
    $3 == "ok" || $3 == "io-errors" {
      printf "| %s | %s%s | %s | %s | %s | %s | %s%% | %s-%s |\n", $1, desc[$2],
        ($3 == "ok" ? "" : " **(I/O errors)**"), $4, $5, $6, $7, $8, $10, $11; next }
    { printf "| %s | %s | %s | | | | | |\n", $1, desc[$2], toupper($3) }' "$table"
  echo
  echo "## Ratios"
  echo
  echo "Each ratio is A/B for the same workload. IOPS and MiB/s: above 1 means A is faster. CPU/req: below 1 means A spends less server CPU per request."
  echo
  echo "| A / B | workload | IOPS | MiB/s | CPU/req |"
  echo "|---|---|--:|--:|--:|"
  awk -F'\t' -v wl="$BENCH_WORKLOADS" -v srv=" $BENCH_SERVERS " '
    BEGIN { split("4k rand read QD1|4k rand read QD32|4k rand read 4 conn x QD8|4k rand write QD32|1M seq read QD8|1M seq write QD8", d, "|")
      split("rr4k-qd1 rr4k-qd32 rr4k-4x8 rw4k-qd32 sr1m-qd8 sw1m-qd8", k, " ")
      for (i = 1; i <= 6; i++) desc[k[i]] = d[i] }
    $3 == "ok" { iops[$1, $2] = $4; mib[$1, $2] = $5; cpu[$1, $2] = $7 }
    function r(a, b) { return (a != "" && b != "" && a != "-" && b != "-" && b + 0 > 0) ? sprintf("%.2f", a / b) : "n/a" }
    function rows(a, b,   i, w) {
      if (index(srv, " " a " ") == 0 || index(srv, " " b " ") == 0) return
      for (i = 1; i <= nw; i++) { w = ws[i]
        printf "| %s / %s | %s | %s | %s | %s |\n", a, b, desc[w],
          r(iops[a, w], iops[b, w]), r(mib[a, w], mib[b, w]), r(cpu[a, w], cpu[b, w]) } }
    END { nw = split(wl, ws, " ")
      rows("ubdkit-memory", "nbdkit-memory")
      rows("ubdkit-memory-nopoll", "nbdkit-memory")
      rows("ubdkit-file", "nbdkit-file")
      rows("qemu-nbd", "nbdkit-file")
      rows("floor-memory", "nbdkit-memory")
      rows("ubdkit-memory", "floor-memory") }' "$table"
  if [ ${#notes[@]} -gt 0 ]; then
    echo
    echo "## Notes from this run"
    echo
    local n
    for n in "${notes[@]}"; do echo "- $n"; done
  fi
}

if [ -z "${BENCH_RESULTS:-}" ]; then
  mkdir -p "$here/results"
  base=$here/results/nbd-$(date +%Y-%m-%d)
  BENCH_RESULTS=$base.md
  i=2
  while [ -e "$BENCH_RESULTS" ]; do BENCH_RESULTS=$base-$i.md; i=$((i + 1)); done
fi
report | tee "$BENCH_RESULTS"
log "results written to $BENCH_RESULTS"
[ "$failures" = 0 ]
