# bench/lib.sh: helpers shared by the bench scripts that run servers side
# by side (filter-bench.sh, rbd-bench.sh); sourced, not run.

# server_alive PID: exists and is not a zombie.
server_alive () {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

# stop_pid PID: SIGTERM, SIGKILL after 10 s.
stop_pid () {
  local i
  kill -TERM "$1" 2>/dev/null || return 0
  for (( i = 0; i < 100; i++ )); do server_alive "$1" || break; sleep 0.1; done
  server_alive "$1" && kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null || true
}

# cpu_ticks PID: utime+stime, fields 14 and 15 (after the comm field).
cpu_ticks () {
  local stat rest
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  rest=${stat##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $(( ${12} + ${13} ))
}

pkgver () { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }

# medians RESULTS FMT...: RESULTS has one row per server, workload and
# round: "SERVER WORKLOAD STATUS VALUE...", tab-separated; STATUS ok or
# io-errors, or anything else for a failed round.  Prints one row per
# server and workload, in first-seen order: the median of each value
# column over the rounds, formatted by the matching FMT ("%.0f", ...);
# "-" where no round had a value; a failed round's first three fields
# instead if any round failed.
medians () {
  /usr/bin/python3 - "$@" <<'PY'
import statistics, sys
fmts = sys.argv[2:]
rows, order = {}, []
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
        v = [float(r[i]) for r in rs if len(r) > i and r[i] not in ("", "-")]
        return fmt % statistics.median(v) if v else "-"
    st = "io-errors" if any(r[2] == "io-errors" for r in rs) else "ok"
    print("\t".join([k[0], k[1], st] + [med(3 + j, f) for j, f in enumerate(fmts)]))
PY
}

# stop_all_and_note: stop every server in pid_of (the caller's associative
# array), and add up to five distinct error-looking lines of each one's
# log (log_of) to the caller's notes.
stop_all_and_note () {
  local s line
  for s in "$@"; do
    [ -n "${pid_of[$s]:-}" ] || continue
    stop_pid "${pid_of[$s]}"
    unset "pid_of[$s]"
    while IFS= read -r line; do
      notes+=("$s logged: \`${line:0:240}\`")
    done < <(grep -aiE 'error|fail|fatal|abort|assert|stall' "${log_of[$s]}" |
             awk '!seen[$0]++' | head -n 5)
  done
}

# results_file KIND: bench/results/KIND-DATE.md, with -2, -3, ... appended
# so that no earlier report is overwritten (BENCH_RESULTS, if set, wins).
results_file () {
  local base f i=2
  if [ -n "${BENCH_RESULTS:-}" ]; then echo "$BENCH_RESULTS"; return; fi
  mkdir -p "$here/results"
  base=$here/results/$1-$(date +%Y-%m-%d)
  f=$base.md
  while [ -e "$f" ]; do f=$base-$i.md; i=$((i + 1)); done
  echo "$f"
}

# launch NAME SOCK CMD...: start a server (its log in log_of[NAME], set by
# the caller) on a Unix socket, and wait until nbdinfo completes a
# handshake (30 s).  Sets the caller's cmd_of, uri_of and pid_of.
launch () {
  local name=$1 sock=$2 i
  shift 2
  cmd_of[$name]="$*"
  uri_of[$name]="nbd+unix:///?socket=$sock"
  log "starting $name: $*"
  "$@" </dev/null >"${log_of[$name]}" 2>&1 &
  pid_of[$name]=$!
  for (( i = 0; i < 300; i++ )); do
    server_alive "${pid_of[$name]}" || break
    [ -S "$sock" ] && nbdinfo --size "${uri_of[$name]}" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "$name did not start; its log:"; sed 's/^/    /' "${log_of[$name]}" >&2
  stop_pid "${pid_of[$name]}"
  unset "pid_of[$name]"
  return 1
}

# The four workloads of filter-bench.sh and rbd-bench.sh: fio options, and
# the report's name for each.
workload_args () {
  case $1 in
    rr4k-qd32) echo "--rw=randread  --bs=4k --iodepth=32 --norandommap" ;;
    rw4k-qd32) echo "--rw=randwrite --bs=4k --iodepth=32 --norandommap" ;;
    sr1m-qd8)  echo "--rw=read  --bs=1M --iodepth=8" ;;
    sw1m-qd8)  echo "--rw=write --bs=1M --iodepth=8" ;;
    *) return 1 ;;
  esac
}
workload_desc () {
  case $1 in
    rr4k-qd32) echo "4k rand read QD32" ;;
    rw4k-qd32) echo "4k rand write QD32" ;;
    sr1m-qd8)  echo "1M seq read QD8" ;;
    sw1m-qd8)  echo "1M seq write QD8" ;;
  esac
}
# descs: "WORKLOAD=DESCRIPTION|" for each of BENCH_WORKLOADS, for the
# reports' awk to split.
descs () { local w; for w in $BENCH_WORKLOADS; do printf '%s=%s|' "$w" "$(workload_desc "$w")"; done; }
