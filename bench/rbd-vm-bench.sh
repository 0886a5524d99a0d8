#!/usr/bin/env bash
# rbd-vm-bench.sh: ubdkit against rbd-nbd, Ceph's own block device server,
# in one run -- which needs a kernel with the nbd driver (rbd-nbd serves
# only the kernel's NBD client), so it runs in the test VM
# (tests/vm/vm-run, Debian 12's 6.12 kernel under qemu TCG) with the
# cluster on the host, in a private network namespace the guest reaches
# through qemu's user networking, as tests/test-vm-rbd.sh does.  In the
# guest (bench/rbd-vm-guest.sh), one image each on the same cluster:
#
#   ublk        ubdkit add rbd pool=rbd image=b-ublk         (/dev/ublkb0)
#   ubdkit-nbd  ubdkit serve -U SOCK rbd ..., nbd-client -unix (/dev/nbd1)
#   rbd-nbd     rbd-nbd map rbd/b-rbd-nbd                     (/dev/nbd0)
#   qemu-nbd    qemu-nbd -c /dev/nbd2 --image-opts driver=rbd,...
#
# fio (libaio, O_DIRECT) on each device, the four workloads of the other
# benches, the servers taking turns round by round.  Reported: IOPS, MiB/s,
# p99 completion latency and each server's CPU per request (utime+stime of
# the whole process, librbd's threads included, over the requests fio
# completed); medians over the rounds; ratios against rbd-nbd.
#
# What this measures and what it cannot: every byte to the cluster goes
# through slirp and an emulated CPU, and the guest's two vCPUs are shared
# by fio, the kernel and the server, so the IOPS here are those of the
# whole emulated path, not of a server alone.  A server shows in its CPU
# per request (emulated instructions, which TCG makes several times
# dearer than native ones, for every server alike) and, as the two vCPUs
# are busy through most of a run, in the IOPS.  Native speed
# against qemu-nbd and librbd alone is bench/rbd-bench.sh's.
#
# Usage: bench/rbd-vm-bench.sh   (root; not part of make check)
# Environment:
#   UBDKIT=PATH           the ubdkit binary (default <repo>/ubdkit)
#   BENCH_RUNTIME=S       seconds per fio run (default 8)
#   BENCH_ROUNDS=N        turns per server and workload (default 4: each
#                         server takes each place in the order once)
#   BENCH_SIZE=MiB        image size in MiB (default 128)
#   BENCH_SERVERS="..."   subset of: ublk ubdkit-nbd rbd-nbd qemu-nbd
#   BENCH_WORKLOADS="..." subset of: rr4k-qd32 rw4k-qd32 sr1m-qd8 sw1m-qd8
#   BENCH_STORE=bluestore|memstore  the OSD's object store (default
#                         bluestore, on a sparse file under /var/tmp: a
#                         memstore OSD slows down run by run under random
#                         4 KiB writes, bench/results/rbd-2026-12-04-2.md)
#   BENCH_RESULTS=FILE    report (default bench/results/rbd-vm-DATE.md)
#   BENCH_KEEP=1          keep the scratch dir
# Exit status: 0 if every server ran every workload, 1 otherwise (the
# report is still written), 2 if it could not start.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
: "${UBDKIT:=$top/ubdkit}"
: "${BENCH_RUNTIME:=8}" "${BENCH_ROUNDS:=4}" "${BENCH_SIZE:=128}" "${BENCH_KEEP:=0}"
: "${BENCH_SERVERS:=ublk ubdkit-nbd rbd-nbd qemu-nbd}" "${BENCH_STORE:=bluestore}"
: "${BENCH_WORKLOADS:=rr4k-qd32 rw4k-qd32 sr1m-qd8 sw1m-qd8}"
export UBDKIT
addr=10.99.0.1
vm=$top/tests/vm

log () { printf '[rbd-vm-bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die () { log "ERROR: $*"; exit 2; }

if [ -z "${RBD_VM_BENCH_NETNS:-}" ]; then
  [ "$(id -u)" = 0 ] || die "run as root (a network namespace, the VM's cluster)"
  for p in fio rbd-nbd nbd-client qemu-nbd rbd ceph-mon ceph-osd unshare ip tar /usr/bin/python3; do
    command -v "$p" >/dev/null 2>&1 || die "'$p' is not installed"
  done
  [ -x "$UBDKIT" ] || die "$UBDKIT is not built"
  "$vm/vm-run" --prepare || die "no VM kernel (tests/vm/vm-run --prepare)"
  BENCH_RESULTS=$(BENCH_RESULTS=${BENCH_RESULTS:-} results_file rbd-vm)
  export BENCH_RESULTS
  exec unshare -n env RBD_VM_BENCH_NETNS=1 bash "$0" "$@"
fi

ip link set lo up
ip addr add "$addr/32" dev lo
scratch=$(mktemp -d /var/tmp/rbd-vm-bench.XXXXXX)
cluster=$scratch/cluster
cluster_up=0
cleanup () {
  local st=$?
  trap - EXIT INT TERM
  [ "$cluster_up" = 1 ] && "$top/tests/ceph/cluster.sh" stop "$cluster" >/dev/null 2>&1
  if [ "$BENCH_KEEP" = 1 ]; then log "scratch kept in $scratch"; else rm -rf "$scratch"; fi
  exit $st
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

n=$(wc -w <<<"$BENCH_SERVERS")
log "starting a one-OSD $BENCH_STORE cluster on $addr"
env_out=$(CLUSTER_MEMSTORE_BYTES=$(( (2 * n * BENCH_SIZE + 256) << 20 )) \
          "$top/tests/ceph/cluster.sh" start "$cluster" --addr "$addr" --store "$BENCH_STORE") ||
  die "the cluster did not start"
cluster_up=1
eval "$env_out"
export CEPH_CONF CEPH_ARGS
for s in $BENCH_SERVERS; do
  case $s in ublk|ubdkit-nbd|rbd-nbd|qemu-nbd) ;; *) die "unknown server '$s'" ;; esac
  rbd create --size "${BENCH_SIZE}M" "rbd/b-$s" || die "rbd create rbd/b-$s"
done
"$top/tests/ceph/cluster.sh" guest-conf "$cluster" > "$scratch/vm.conf" ||
  die "cluster.sh guest-conf"

wargs=()
for w in $BENCH_WORKLOADS; do
  a=$(workload_args "$w") || die "unknown workload '$w'"
  wargs+=(--env "ARGS_${w//-/_}=$a")
done
carry=()
for so in librados.so.2 librbd.so.1; do
  p=$(/sbin/ldconfig -p | awk -v s="$so" '!f && $1 == s && /x86-64/ { print $NF; f = 1 }')
  [ -n "$p" ] || die "$so is not installed"
  carry+=(--carry "$p")
done
qmod=$(ls /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so 2>/dev/null) ||
  die "qemu's rbd driver is not installed (Debian: qemu-block-extra)"
carry+=(--carry fio --carry rbd-nbd --carry nbd-client --carry qemu-nbd --carry "$qmod")
truncate -s 32M "$scratch/results.img"
timeout=$(( 300 + n * $(wc -w <<<"$BENCH_WORKLOADS") * BENCH_ROUNDS * (BENCH_RUNTIME + 15) ))
log "guest: servers '$BENCH_SERVERS', workloads '$BENCH_WORKLOADS', $BENCH_ROUNDS rounds of $BENCH_RUNTIME s"
st=0
"$vm/vm-run" --net --mem 2048 --timeout $timeout \
  --carry "$vm/lib.sh=/vmlib.sh" --carry "$scratch/vm.conf=/etc/ceph/vm.conf" "${carry[@]}" \
  --disk "$scratch/results.img" --env VMLIB=/vmlib.sh \
  --env SERVERS="$BENCH_SERVERS" --env WORKLOADS="$BENCH_WORKLOADS" \
  --env ROUNDS="$BENCH_ROUNDS" --env RUNTIME="$BENCH_RUNTIME" "${wargs[@]}" \
  "$here/rbd-vm-guest.sh" > "$scratch/vm.log" 2>&1 || st=$?
grep -E '^(  |ok |FAIL|not ok|vm-run: (FAIL|time))' "$scratch/vm.log" | sed 's/^/  guest: /' >&2 || true
[ $st = 0 ] || { tail -n 40 "$scratch/vm.log" >&2; die "the guest failed (status $st)"; }
mkdir -p "$scratch/out"
tar -xf "$scratch/results.img" -C "$scratch/out" || die "no results from the guest"

kver=$(grep -m1 -oE 'kernel [^;]+' "$scratch/vm.log" | cut -d' ' -f2)
/usr/bin/python3 - "$scratch/out" "$BENCH_RESULTS" "$BENCH_SERVERS" "$BENCH_WORKLOADS" \
  "$BENCH_ROUNDS" "$BENCH_RUNTIME" "$BENCH_SIZE" "$kver" "$BENCH_STORE" \
  "$("$UBDKIT" --version 2>/dev/null | sed -n 1p), rbd-nbd $(pkgver rbd-nbd), qemu-nbd $(pkgver qemu-utils), librbd $(pkgver librbd1), fio $(pkgver fio)" <<'PY'
import json, os, statistics, sys
out, dest, servers, workloads, rounds, runtime, size, kver, store, vers = sys.argv[1:]
servers, workloads = servers.split(), workloads.split()
desc = {"rr4k-qd32": "4k rand read QD32", "rw4k-qd32": "4k rand write QD32",
        "sr1m-qd8": "1M seq read QD8", "sw1m-qd8": "1M seq write QD8"}
ticks = {}
for line in open(os.path.join(out, "ticks")):
    f = line.split()
    s, w, r, c0, c1 = f[0], f[1], f[2], f[3], f[4]
    # /proc/stat's first line, before and after: cpu user nice system idle ...
    st0, st1 = [int(x) for x in f[6:16]], [int(x) for x in f[17:27]]
    busy = sum(st1) - sum(st0) - ((st1[3] + st1[4]) - (st0[3] + st0[4]))
    ticks[(s, w, r)] = (int(c1) - int(c0) if c0 != "-" and c1 != "-" else None, busy)
rows, bad = {}, []
for s in servers:
    for w in workloads:
        vals = []
        for r in range(1, int(rounds) + 1):
            p = os.path.join(out, "%s.%s.%d.json" % (s, w, r))
            try:
                j = json.load(open(p))["jobs"][0]
            except Exception:
                bad.append("%s %s round %d: no fio result" % (s, w, r))
                continue
            d = j["read"] if w.startswith(("rr", "sr")) else j["write"]
            if j.get("error"):
                bad.append("%s %s round %d: fio error %d" % (s, w, r, j["error"]))
            ios = d["total_ios"]
            t, busy = ticks.get((s, w, str(r)), (None, None))
            p99 = d["clat_ns"].get("percentile", {}).get("99.000000")
            vals.append((d["iops"], d["bw"] / 1024.0, p99 / 1000.0 if p99 else None,
                         t * 10000.0 / ios if t is not None and ios else None,
                         busy * 10000.0 / ios if ios else None))
        if vals:
            med = lambda i: statistics.median([v[i] for v in vals if v[i] is not None]) \
                if any(v[i] is not None for v in vals) else None
            rows[(s, w)] = [med(i) for i in range(5)]
fmt = lambda v, f: "-" if v is None else f % v
ratio = lambda a, b: "-" if a is None or b is None or b == 0 else "%.2f" % (a / b)
L = ["# rbd in a VM: ubdkit (ublk and NBD) against rbd-nbd and qemu-nbd", "",
     "bench/rbd-vm-bench.sh: guest kernel %s under qemu TCG (2 vCPUs, 2048 MiB), "
     "the cluster (1 mon, 1 %s OSD) on the host through slirp; images of %s MiB, "
     "fio libaio O_DIRECT, %s rounds of %s s, servers taking turns; medians." % (kver, store, size, rounds, runtime),
     "", vers, "",
     "CPU/req: the server process's utime+stime (every thread, librbd's included) over the "
     "requests fio completed, in emulated-CPU microseconds; guest CPU/req: all of the guest's "
     "busy time (fio, kernel, server) per request.", "",
     "| workload | server | IOPS | MiB/s | p99 us | CPU/req us | guest CPU/req us |",
     "|---|---|--:|--:|--:|--:|--:|"]
for w in workloads:
    for s in servers:
        v = rows.get((s, w))
        if not v:
            L.append("| %s | %s | failed | | | | |" % (desc[w], s)); continue
        L.append("| %s | %s | %s | %s | %s | %s | %s |" % (desc[w], s, fmt(v[0], "%.0f"), fmt(v[1], "%.1f"),
                 fmt(v[2], "%.0f"), fmt(v[3], "%.0f"), fmt(v[4], "%.0f")))
L += ["", "Ratios against rbd-nbd (IOPS; server CPU per request, lower is better):", "",
      "| workload | " + " | ".join("%s IOPS | %s CPU/req" % (s, s) for s in servers if s != "rbd-nbd") + " |",
      "|---|" + "--:|--:|" * len([s for s in servers if s != "rbd-nbd"])]
for w in workloads:
    base = rows.get(("rbd-nbd", w))
    cells = []
    for s in servers:
        if s == "rbd-nbd": continue
        v = rows.get((s, w))
        cells += [ratio(v and v[0], base and base[0]), ratio(v and v[3], base and base[3])]
    L.append("| %s | %s |" % (desc[w], " | ".join(cells)))
notes = open(os.path.join(out, "notes")).read().strip().splitlines() if os.path.exists(os.path.join(out, "notes")) else []
status = open(os.path.join(out, "status")).read().strip().splitlines() if os.path.exists(os.path.join(out, "status")) else []
L += ["", "Guest notes:", ""] + ["    " + n for n in notes + status]
if bad:
    L += ["", "Failures:", ""] + ["- " + b for b in bad]
open(dest, "w").write("\n".join(L) + "\n")
print("\n".join(L))
sys.exit(1 if bad else 0)
PY
