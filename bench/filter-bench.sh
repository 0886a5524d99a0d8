#!/usr/bin/env bash
# filter-bench.sh: nbdkit filter chains served by ubdkit (--filter) and by
# nbdkit, side by side in one run.
#
# For each chain both servers run the same filters (nbdkit 1.32's .so
# files, the same ones) over the same kind of bottom: ubdkit's native
# backend, nbdkit's plugin of that name.
#
#   none-file             no filter: ubdkit's native file backend (no worker
#                         threads) against nbdkit's file plugin, the floor
#                         for the chains over file
#   nofilter-file         --filter=nofilter over file (the host's own cost)
#   offset-truncate-file  --filter=offset --filter=truncate over file
#                         (offset=1M truncate=SIZE-16M)
#   cow-memory            --filter=cow over memory
#   cache-file            --filter=cache over file
#
#   ubdkit: ubdkit serve -U SOCK FILTERS BACKEND ARGS
#   nbdkit: nbdkit -f -U SOCK FILTERS PLUGIN ARGS
#   ubdkit-wN: ubdkit serve -U SOCK --workers N FILTERS BACKEND ARGS
#           (BENCH_WORKERS=N, default 2; empty: not run).  Filter calls
#           run on ubdkit's worker threads (8 by default); how many of
#           them there are to wake decides most of the cost of a small
#           request from a fast bottom (docs/nbdkit-filters.md, "Bench").
#
# As in nbd-bench.sh (bench/README.md): every server starts at the
# beginning and gets a sequential 1 MiB write pass over its whole device
# (not measured; for cow and cache that fills the overlay and the cache
# file); then workload by workload, round by round, the servers take
# turns, so noise that drifts over minutes falls on all of them.  fio's
# nbd engine (libnbd), one connection.  Reported per server and workload:
# IOPS, MiB/s, p99 completion latency, and the server's CPU time per
# request (utime+stime from /proc/PID/stat around the fio run, divided by
# the requests completed), medians over the rounds; and the ratios
# ubdkit/nbdkit per chain.  The file servers share one file of random
# data (only one runs fio at a time); each file server's writes land in it.
#
# Usage: bench/filter-bench.sh        (not part of make check)
# Environment:
#   UBDKIT=PATH          the ubdkit binary (default <repo>/ubdkit)
#   BENCH_RUNTIME=S      seconds per workload (default 10)
#   BENCH_ROUNDS=N       turns per server and workload (default 3)
#   BENCH_SIZE=SIZE      device and file size (default 1G)
#   BENCH_CHAINS="..."   subset of the chains above (default: all)
#   BENCH_WORKLOADS="..." subset of: rr4k-qd32 rw4k-qd32 sr1m-qd8 sw1m-qd8
#   BENCH_TMPDIR=DIR     the file, sockets and the filters' temporary files
#                        (cow's overlay, cache's cache: TMPDIR); local disk
#                        (default /var/tmp)
#   BENCH_RESULTS=FILE   report (default bench/results/filters-DATE.md, with
#                        -2, -3, ... appended if it exists)
#   BENCH_KEEP=1         keep the scratch dir (fio JSON, server logs)
#   UBDKIT_ARGS="..."    extra options for ubdkit serve
#   BENCH_WORKERS=N      also run ubdkit with --workers N (default 2; empty: no)
#
# Exit status: 0 if every workload ran on every server, 1 otherwise (the
# report is still written, with the failures marked).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"

: "${UBDKIT:=$top/ubdkit}"
: "${BENCH_RUNTIME:=10}"
: "${BENCH_ROUNDS:=3}"
: "${BENCH_SIZE:=1G}"
: "${BENCH_CHAINS:=none-file nofilter-file offset-truncate-file cow-memory cache-file}"
: "${BENCH_WORKLOADS:=rr4k-qd32 rw4k-qd32 sr1m-qd8 sw1m-qd8}"
: "${BENCH_TMPDIR:=/var/tmp}"
: "${BENCH_KEEP:=0}"
: "${UBDKIT_ARGS:=}"
: "${BENCH_WORKERS=2}"

log () { printf '[filter-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die () { log "ERROR: $*"; exit 2; }

for p in fio nbdkit nbdinfo jq getconf numfmt /usr/bin/python3; do
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

scratch=$(mktemp -d "$BENCH_TMPDIR/filter-bench.XXXXXX")
datafile=$scratch/disk.img
export TMPDIR=$scratch           # cow's overlay, cache's cache file
declare -A cmd_of=() pid_of=() log_of=() uri_of=()
cleanup () {
  local st=$? p
  trap - EXIT INT TERM
  for p in "${pid_of[@]}"; do stop_pid "$p"; done
  if [ "$BENCH_KEEP" = 1 ]; then log "scratch kept in $scratch"
  else rm -rf "$scratch"; fi
  exit $st
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM


# chain_args CHAIN: "FILTER-OPTIONS|BOTTOM|ARGS" (ARGS for both servers).
chain_args () {
  case $1 in
    none-file) echo "|file|" ;;
    nofilter-file) echo "--filter=nofilter|file|" ;;
    offset-truncate-file)
      echo "--filter=offset --filter=truncate|file|offset=1M truncate=$(( size_bytes - 16 * 1048576 ))" ;;
    cow-memory) echo "--filter=cow|memory|" ;;
    cache-file) echo "--filter=cache|file|" ;;
    *) return 1 ;;
  esac
}

# start NAME (CHAIN/ubdkit or CHAIN/nbdkit): start it, wait for a handshake.
start () {
  local name=$1 chain=${1%/*} who=${1#*/} sock spec filters bottom args i
  local -a cmd
  sock=$scratch/${chain}.$who.sock
  spec=$(chain_args "$chain") || die "unknown chain '$chain'"
  IFS='|' read -r filters bottom args <<<"$spec"
  # shellcheck disable=SC2206
  if [ "${who%-w*}" = ubdkit ]; then
    local -a opts=()
    [ "$who" = ubdkit ] || opts=(--workers "${who#ubdkit-w}")
    case $bottom in
      file) cmd=("$UBDKIT" serve -U "$sock" "${opts[@]}" $UBDKIT_ARGS $filters file "file=$datafile" $args) ;;
      memory) cmd=("$UBDKIT" serve -U "$sock" "${opts[@]}" $UBDKIT_ARGS $filters memory "size=$BENCH_SIZE" $args) ;;
    esac
  else
    case $bottom in
      file) cmd=(nbdkit -f --exit-with-parent -U "$sock" $filters file "file=$datafile" $args) ;;
      memory) cmd=(nbdkit -f --exit-with-parent -U "$sock" $filters memory "size=$BENCH_SIZE" $args) ;;
    esac
  fi
  log_of[$name]=$scratch/${chain}.$who.log
  launch "$name" "$sock" "${cmd[@]}"
}

fio_timeout=$(( BENCH_RUNTIME * 3 + 60 ))

run_fio () {
  local uri=$1 out=$2; shift 2
  timeout --kill-after=10 "$fio_timeout" \
    fio --ioengine=nbd --uri="$uri" --group_reporting \
        --output-format=json --output="$out" "$@" >"$out.stdout" 2>"$out.stderr"
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

results=$scratch/results.tsv     # server workload status iops mibs p99us cpuus cpupct
: >"$results"
failures=0
notes=()

# measure NAME WORKLOAD ROUND
measure () {
  local name=$1 w=$2 r=$3 out c0 c1 t0 t1 rc=0 iops bw ios p99 err
  out=$scratch/${name//\//.}.$w.$r.json
  c0=$(cpu_ticks "${pid_of[$name]}") t0=$(date +%s%N)
  # shellcheck disable=SC2046
  run_fio "${uri_of[$name]}" "$out" --name="$w" $(workload_args "$w") \
    --time_based --runtime="$BENCH_RUNTIME" || rc=$?
  t1=$(date +%s%N)
  if ! c1=$(cpu_ticks "${pid_of[$name]}") || ! server_alive "${pid_of[$name]}"; then
    notes+=("$name died during $w.")
    printf '%s\t%s\tserver-died\n' "$name" "$w" >>"$results"
    failures=$((failures + 1))
    unset "pid_of[$name]"
    return 0
  fi
  if ! read -r iops bw ios p99 err < <(fio_summary "$out" 2>/dev/null) || [ -z "${ios:-}" ]; then
    notes+=("$name: fio failed on $w (exit $rc): $(tail -n 1 "$out.stderr")")
    printf '%s\t%s\tfio-failed\n' "$name" "$w" >>"$results"
    failures=$((failures + 1))
    return 0
  fi
  local st=ok
  if [ "$rc" != 0 ] || [ "$err" != 0 ]; then
    st=io-errors
    notes+=("$name: fio reported errors on $w (exit $rc, error $err)")
    failures=$((failures + 1))
  fi
  awk -v s="$name" -v w="$w" -v st="$st" -v iops="$iops" -v bw="$bw" \
      -v ios="$ios" -v p99="$p99" -v dc=$((c1 - c0)) -v hz="$clk_tck" \
      -v ns=$((t1 - t0)) 'BEGIN { cpu = dc / hz
    printf "%s\t%s\t%s\t%.0f\t%.1f\t%.0f\t%s\t%.0f\n", s, w, st, iops,
      bw / 1048576, p99 / 1000, (ios > 0 ? sprintf("%.2f", cpu * 1e6 / ios) : "-"),
      100 * cpu / (ns / 1e9) }' >>"$results"
  log "$name: $w round $r: $(tail -n 1 "$results" | cut -f4-)"
}

servers=()
for c in $BENCH_CHAINS; do
  chain_args "$c" >/dev/null || die "unknown chain '$c'"
  servers+=("$c/ubdkit" "$c/nbdkit")
  # (the native file backend has no workers)
  [ -z "$BENCH_WORKERS" ] || [ "$c" = none-file ] || servers+=("$c/ubdkit-w$BENCH_WORKERS")
done
[ -z "$BENCH_WORKERS" ] || [[ $BENCH_WORKERS =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_WORKERS must be a positive integer or empty"
for w in $BENCH_WORKLOADS; do workload_args "$w" >/dev/null || die "unknown workload '$w'"; done

log "writing $BENCH_SIZE of random data to $datafile"
head -c "$size_bytes" /dev/urandom >"$datafile"
sync "$datafile"
ubdkit_rev=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
ubdkit_bin="$(sha256sum "$UBDKIT" | cut -c1-12), built $(date -u -r "$UBDKIT" '+%Y-%m-%d %H:%M:%S UTC')"
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)

for s in "${servers[@]}"; do
  if ! start "$s"; then
    notes+=("$s failed to start: $(head -n 3 "${log_of[$s]}" | tr '\n' ' ' | cut -c1-300)")
    failures=$((failures + 1))
    continue
  fi
  log "$s: prefill"
  run_fio "${uri_of[$s]}" "$scratch/${s//\//.}.prefill.json" --name=prefill \
    --rw=write --bs=1M --iodepth=8 ||
    { notes+=("$s: the prefill pass failed"); failures=$((failures + 1)); }
done

for w in $BENCH_WORKLOADS; do
  for (( round = 1; round <= BENCH_ROUNDS; round++ )); do
    for s in "${servers[@]}"; do
      [ -n "${pid_of[$s]:-}" ] || continue
      measure "$s" "$w" "$round"
    done
  done
done

stop_all_and_note "${servers[@]}"

# Medians over the rounds: server workload status iops mibs p99 cpu/req cpu%.
table=$scratch/table.tsv
medians "$results" %.0f %.1f %.0f %.2f %.0f >"$table"
t_end=$(date +%s)
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)

report () {
  local s
  echo "# nbdkit filter chains: ubdkit vs nbdkit"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| kernel | $(uname -r) |"
  echo "| nproc | $(nproc) |"
  echo "| ubdkit | $ubdkit_rev; binary sha256 $ubdkit_bin |"
  echo "| nbdkit (server and filters) | $(pkgver nbdkit) |"
  echo "| fio / libnbd | $(pkgver fio) / $(pkgver libnbd0) |"
  echo "| runtime per workload | ${BENCH_RUNTIME} s, $BENCH_ROUNDS rounds (medians; servers side by side, taking turns) |"
  echo "| device size | $BENCH_SIZE (file: random data in $BENCH_TMPDIR, page cache) |"
  echo "| load average start / end | $loadavg_start / $loadavg_end |"
  echo "| wall time | $(( t_end - t_start )) s |"
  echo
  echo "Servers:"
  echo
  for s in "${servers[@]}"; do echo "- $s: \`${cmd_of[$s]:-(not run)}\`"; done
  echo
  echo "fio: \`fio --ioengine=nbd --uri=nbd+unix:///?socket=SOCK --time_based --runtime=$BENCH_RUNTIME --group_reporting\` and the workload's options, one connection."
  echo
  echo "## Ratios ubdkit / nbdkit"
  echo
  echo "IOPS and MiB/s: above 1, ubdkit is faster.  CPU/req (server CPU time per request): below 1, ubdkit is cheaper.${BENCH_WORKERS:+  wN: ubdkit with --workers $BENCH_WORKERS.}"
  echo
  if [ -n "$BENCH_WORKERS" ]; then
    echo "| chain | workload | IOPS | MiB/s | CPU/req | IOPS w$BENCH_WORKERS | CPU/req w$BENCH_WORKERS |"
    echo "|---|---|--:|--:|--:|--:|--:|"
  else
    echo "| chain | workload | IOPS | MiB/s | CPU/req |"
    echo "|---|---|--:|--:|--:|"
  fi
  awk -F'\t' -v chains="$BENCH_CHAINS" -v wl="$BENCH_WORKLOADS" -v d="$(descs)" -v wn="$BENCH_WORKERS" '
    BEGIN { n = split(d, dd, "|"); for (i = 1; i <= n; i++) { split(dd[i], kv, "="); desc[kv[1]] = kv[2] } }
    $3 == "ok" { iops[$1, $2] = $4; mib[$1, $2] = $5; cpu[$1, $2] = $7 }
    function r(a, b) { return (a != "" && b != "" && a != "-" && b != "-" && b + 0 > 0) ? sprintf("%.2f", a / b) : "n/a" }
    END { nc = split(chains, c, " "); nw = split(wl, w, " ")
      for (i = 1; i <= nc; i++) for (j = 1; j <= nw; j++) {
        u = c[i] "/ubdkit"; k = c[i] "/nbdkit"; v = c[i] "/ubdkit-w" wn
        printf "| %s | %s | %s | %s | %s |", c[i], desc[w[j]],
          r(iops[u, w[j]], iops[k, w[j]]), r(mib[u, w[j]], mib[k, w[j]]), r(cpu[u, w[j]], cpu[k, w[j]])
        if (wn != "") printf " %s | %s |", r(iops[v, w[j]], iops[k, w[j]]), r(cpu[v, w[j]], cpu[k, w[j]])
        printf "\n" } }' "$table"
  echo
  echo "## Results"
  echo
  echo "| server | workload | IOPS | MiB/s | p99 clat (µs) | srv CPU/req (µs) | srv CPU% |"
  echo "|---|---|--:|--:|--:|--:|--:|"
  awk -F'\t' -v d="$(descs)" '
    BEGIN { n = split(d, dd, "|"); for (i = 1; i <= n; i++) { split(dd[i], kv, "="); desc[kv[1]] = kv[2] } }
    $3 == "ok" || $3 == "io-errors" {
      printf "| %s | %s%s | %s | %s | %s | %s | %s%% |\n", $1, desc[$2],
        ($3 == "ok" ? "" : " **(I/O errors)**"), $4, $5, $6, $7, $8; next }
    { printf "| %s | %s | %s | | | | |\n", $1, desc[$2], toupper($3) }' "$table"
  if [ ${#notes[@]} -gt 0 ]; then
    echo
    echo "## Notes from this run"
    echo
    local n
    for n in "${notes[@]}"; do echo "- $n"; done
  fi
}

BENCH_RESULTS=$(results_file filters)
report | tee "$BENCH_RESULTS"
log "results written to $BENCH_RESULTS"
[ "$failures" = 0 ]
