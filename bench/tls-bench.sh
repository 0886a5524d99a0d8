#!/usr/bin/env bash
# tls-bench.sh: the cost of TLS, ubdkit against nbdkit, in one interleaved
# run.  Servers (all over TCP on 127.0.0.1, memory backend, each running
# from the start; workload by workload they take turns, BENCH_ROUNDS times,
# medians reported):
#
#   ubdkit-plain  ubdkit serve memory          nbdkit-plain  nbdkit memory
#   ubdkit-x509   --tls=require X.509          nbdkit-x509   the same
#   ubdkit-psk    --tls=require PSK            nbdkit-psk    the same
#
# Workloads: 4k QD32 randread, 4k QD32 randwrite, 1M QD4 read, 1M QD4
# write with fio's nbd engine (libnbd).  fio takes only a URI and libnbd
# allows no key file there, so fio finds the X.509 client certificates in
# $HOME/.pki/libnbd, which libnbd reads only when not root: fio runs as
# nobody.  No such default exists for PSK: the psk servers get nbdcopy
# instead (1M requests, 4 connections, 64 in flight each: "copy-read" to
# /dev/null and "copy-write" from a file of random data).
#
# Reported: IOPS, MiB/s, and the server's CPU time per request (utime +
# stime from /proc/PID/stat around each run, divided by the requests the
# client completed; nbdcopy's requests counted as the size / 1 MiB), and
# ubdkit/nbdkit ratios of both for each TLS kind; and the client's CPU
# (fio's usr+sys, % of one CPU): near 100 % the client is the bottleneck,
# and the IOPS ratio says more about it than about the servers.  The machine has 2
# cores shared by client and server: CPU per request is the number to
# compare (see bench/README.md and nbd-bench.sh).  ubdkit on a host
# without the kernel's tls module always uses userspace TLS records; in a VM
# with it, kTLS.
#
# Usage: bench/tls-bench.sh   (not part of make check)
# Environment: UBDKIT (default <repo>/ubdkit), BENCH_RUNTIME (s, default 8),
# BENCH_SIZE (default 256M), BENCH_ROUNDS (default 1), BENCH_SERVERS
# (subset, default all six), BENCH_OUT (also write the table there).
here=$(cd "$(dirname "$0")" && pwd)
srcdir=$here/../tests
: "${UBDKIT:=$here/../ubdkit}"
source "$srcdir/functions.sh"
requires_prog fio
requires_prog nbdcopy
requires_prog setpriv
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio lacks the nbd engine"
RUNTIME=${BENCH_RUNTIME:-8}
SIZE=${BENCH_SIZE:-256M}
ROUNDS=${BENCH_ROUNDS:-1}
SERVERS=${BENCH_SERVERS:-ubdkit-plain ubdkit-x509 ubdkit-psk nbdkit-plain nbdkit-x509 nbdkit-psk}
make_tmpdir
chmod 755 "$tmp"
export tmp
source "$srcdir/tls-setup.sh"
tls_setup "$tmp/tls" || fail "tls-setup.sh"
chmod -R a+rX "$tmp/tls"
fh=$tmp/home
mkdir -p "$fh/.pki"; cp -r "$tmp/tls/client" "$fh/.pki/libnbd"; chown -R 65534:65534 "$fh"
bytes=$(numfmt --from=iec "$SIZE")

declare -A pid port
for s in $SERVERS; do
  impl=${s%%-*} kind=${s#*-}
  case $kind in
    plain) opts=() ;;
    x509) opts=(--tls=require --tls-certificates="$tmp/tls/server") ;;
    psk) opts=(--tls=require --tls-psk="$tmp/tls/keys.psk") ;;
  esac
  SERVER=$impl TLS_SIZE=$SIZE
  source "$srcdir/tls-functions.sh"
  TLS_BACKEND="memory size=$SIZE" tls_start "${s//-/_}" tcp "${opts[@]}"
  p="pid_${s//-/_}" q="port_${s//-/_}"
  pid[$s]=${!p} port[$s]=${!q}
done

uri_of () { # SERVER
  case ${1#*-} in
    plain) echo "nbd://localhost:${port[$1]}/" ;;
    x509) echo "nbds://localhost:${port[$1]}/" ;;
    psk) echo "nbds://alice@localhost:${port[$1]}/?tls-psk-file=$tmp/tls/keys.psk" ;;
  esac
}
cpu_ticks () { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# Fill each server once so reads read data.
head -c "$bytes" /dev/urandom > "$tmp/src.img"
for s in $SERVERS; do nbdcopy "$tmp/src.img" "$(uri_of "$s")" || fail "fill $s"; done

results=$tmp/results.tsv   # server workload iops mibs cpuus
WORKLOADS="4k-randread 4k-randwrite 1M-read 1M-write"
run_one () { # SERVER WORKLOAD
  local s=$1 w=$2 uri c0 c1 ios bs rw qd t0 t1 out=$fh/fio.json
  uri=$(uri_of "$s")
  c0=$(cpu_ticks "${pid[$s]}")
  if [ "${s#*-}" = psk ]; then
    # nbdcopy: the same request size class, the whole device.
    case $w in 4k-*) echo "$s $w - - - -" >> "$results"; return ;; esac
    t0=$(date +%s.%N)
    if [ "$w" = 1M-read ]; then nbdcopy --request-size=$((1 << 20)) "$uri" null: || fail "$s $w"
    else nbdcopy --request-size=$((1 << 20)) "$tmp/src.img" "$uri" || fail "$s $w"; fi
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "${pid[$s]}")
    awk -v s="$s" -v w="copy-${w#1M-}" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v c=$((c1 - c0)) -v hz="$hz" \
      'BEGIN { n = b / 1048576; d = t1 - t0;
               printf "%s %s %.0f %.1f %.2f -\n", s, w, n / d, b / 1048576 / d, c / hz * 1e6 / n }' >> "$results"
    return
  fi
  case $w in
    4k-randread) bs=4k rw=randread qd=32 ;; 4k-randwrite) bs=4k rw=randwrite qd=32 ;;
    1M-read) bs=1M rw=read qd=4 ;; 1M-write) bs=1M rw=write qd=4 ;;
  esac
  (cd "$fh" && setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$fh" \
    fio --name=b --ioengine=nbd --uri="$uri" --rw=$rw --bs=$bs --iodepth=$qd \
      --size="$SIZE" --time_based --runtime="$RUNTIME" --output-format=json \
      --output="$out.$$" >/dev/null) || fail "fio $s $w"
  cp "$out.$$" "$out"
  c1=$(cpu_ticks "${pid[$s]}")
  "$PYTHON" - "$out" "$s" "$w" $((c1 - c0)) "$hz" >> "$results" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
ios = j["read"]["total_ios"] + j["write"]["total_ios"]
bw = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1048576
iops = j["read"]["iops"] + j["write"]["iops"]
cpu = int(sys.argv[4]) / int(sys.argv[5])
print(sys.argv[2], sys.argv[3], "%.0f" % iops, "%.1f" % bw,
      "%.2f" % (cpu * 1e6 / ios) if ios else "-",
      "%.0f" % (j["usr_cpu"] + j["sys_cpu"]))
PY
}

: > "$results"
for r in $(seq "$ROUNDS"); do
  for w in $WORKLOADS; do
    for s in $SERVERS; do run_one "$s" "$w"; done
  done
done

table=$tmp/table.md
"$PYTHON" - "$results" "$SERVERS" > "$table" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    s, w, iops, mibs, cpu, ccpu = line.split()
    rows.setdefault((s, w), []).append((iops, mibs, cpu, ccpu))
def med(vals):
    v = [float(x) for x in vals if x != "-"]
    return statistics.median(v) if v else None
servers = sys.argv[2].split()
works = []
for (s, w) in rows:
    if w not in works:
        works.append(w)
print("| server | workload | IOPS | MiB/s | server CPU us/request | client (fio) CPU % |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
m = {}
for w in works:
    for s in servers:
        if (s, w) not in rows:
            continue
        v = rows[(s, w)]
        iops, mibs, cpu, ccpu = (med([x[i] for x in v]) for i in range(4))
        if iops is None:
            continue
        m[(s, w)] = (iops, cpu)
        print("| %s | %s | %.0f | %.1f | %s | %s |" % (s, w, iops, mibs, "%.2f" % cpu if cpu is not None else "-",
                                                   "%.0f" % ccpu if ccpu is not None else "-"))
print()
print("| kind | workload | IOPS ubdkit/nbdkit | CPU/request ubdkit/nbdkit |")
print("| --- | --- | ---: | ---: |")
for kind in ("plain", "x509", "psk"):
    for w in works:
        a, b = m.get(("ubdkit-" + kind, w)), m.get(("nbdkit-" + kind, w))
        if a and b and b[0] and b[1]:
            print("| %s | %s | %.2f | %.2f |" % (kind, w, a[0] / b[0], a[1] / b[1]))
PY
{
  echo "# TLS bench $(date -u +%Y-%m-%d): ${RUNTIME}s per fio run, $SIZE memory, $ROUNDS round(s)"
  echo
  echo "$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); kernel $(uname -r); tls module: $([ -d /sys/module/tls ] && echo loaded || echo absent)"
  echo
  cat "$table"
} | tee ${BENCH_OUT:+"$BENCH_OUT"}
