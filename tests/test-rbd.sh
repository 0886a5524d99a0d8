#!/usr/bin/env bash
# The rbd backend against a real single-node Ceph cluster (memstore, started
# here by tests/ceph/cluster.sh): nbdcopy round trips with checksums equal
# to `rbd export`'s; fio's verify; qemu-img compare against `rbd export`
# and qemu's own rbd driver; writes, FUA, zeroes and trims read back by
# `rbd export`; a snapshot served read-only with writes refused by the
# server; the holes of a thin image in nbdinfo --map (object map and exact);
# a resize seen by the next connection; bad pool, image, snapshot and an
# unreachable cluster each one clear error at start; and every thread of
# the daemon (librados' and librbd's too) blocking the signals it handles,
# with the IO_FLUSHER flags as set, its memory locked.
source "${srcdir:-.}/functions.sh"
source "$srcdir/ceph/functions.sh"
requires_ceph
requires_prog nbdinfo
requires_prog nbdcopy
requires $NBDSH -c pass
make_tmpdir
export tmp

start_ceph
MiB=$((1024 * 1024))
uri_of () { echo "nbd+unix:///?socket=$1"; }

# --- Bad arguments and a cluster that is not there: one error line each.
# start_error WHAT EXPECT [rbd args]: exit 1, one line saying EXPECT, and
# nothing else from Ceph's libraries.
start_error () {
  local what=$1 expect=$2 rc=0
  shift 2
  "$UBDKIT" serve -U "$tmp/bad.sock" --io-flusher=off --no-mlock \
    --oom-score-adj off rbd "$@" 2> "$tmp/bad.err" || rc=$?
  [ $rc = 1 ] || fail "$what: exit status $rc, not 1: $(cat "$tmp/bad.err")"
  [ "$(grep -c 'error:' "$tmp/bad.err")" = 1 ] &&
    grep -q "error: rbd: .*$expect" "$tmp/bad.err" ||
    fail "$what: not one error saying '$expect': $(cat "$tmp/bad.err")"
  ! grep -v '^ubdkit\[' "$tmp/bad.err" ||
    fail "$what: lines from elsewhere than ubdkit"
  echo "$what: $(grep 'error:' "$tmp/bad.err")"
}
rbd create --size 64M rbd/img
start_error "no such pool" "pool nope: no such pool" pool=nope image=img
start_error "no such image" "rbd/nope: no such image" pool=rbd image=nope
start_error "no such snapshot" "rbd/img@nope: no such image or snapshot" \
  pool=rbd image=img snapshot=nope
start_error "no such conf" "configuration $tmp/nope.conf" \
  pool=rbd image=img conf="$tmp/nope.conf"
# A monitor address where nothing listens; Ceph's timeout via $CEPH_ARGS.
port=$(free_tcp_port)
printf '[global]\nmon host = [v2:127.0.0.1:%s]\nauth client required = none\n' \
  "$port" > "$tmp/dead.conf"
CEPH_ARGS="$CEPH_ARGS --client-mount-timeout=3" start_error \
  "unreachable cluster" "cannot connect to the cluster" pool=rbd image=img \
  conf="$tmp/dead.conf"

# --- nbdcopy there and back, and `rbd export`, with checksums.  The source
# has a hole (zeroes from nbdcopy) after 24 MiB of random data; four
# connections over two loop threads.
head -c $((24 * MiB)) /dev/urandom > "$tmp/src"
truncate -s 64M "$tmp/src"
start_server sock pid -t 2 rbd pool=rbd image=img
u=$(uri_of "$sock")
nbdcopy --connections=4 "$tmp/src" "$u" || fail "nbdcopy to rbd/img"
nbdcopy --connections=4 "$u" "$tmp/back" || fail "nbdcopy from rbd/img"
want=$(sha_file "$tmp/src")
[ "$(sha_file "$tmp/back")" = "$want" ] || fail "nbdcopy round trip differs"
[ "$(sha_rbd rbd/img)" = "$want" ] ||
  fail "rbd export differs from what was written through ubdkit"
echo "nbdcopy: 64 MiB there and back, sha256 = rbd export's"

# --- fio writes and verifies (crc32c), odd sizes included.
if command -v fio >/dev/null; then
  fio --name=verify --ioengine=nbd --uri="$u" --rw=randwrite \
    --bsrange=512-128k --iodepth=16 --offset=32M --size=16M \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --output="$tmp/fio.out" || { cat "$tmp/fio.out"; fail "fio verify"; }
  grep -q 'err= 0' "$tmp/fio.out" || fail "fio: $(cat "$tmp/fio.out")"
  echo "fio: randwrite 512-128k, QD16, verified"
fi

# --- Writes, FUA, flush, zeroes (allocated or not), trims: what rbd export
# then reads.
$NBDSH -u "$u" -c '
h.pwrite(b"a" * 65536, 1 << 20, nbd.CMD_FLAG_FUA)
h.pwrite(b"b" * 777, (2 << 20) + 3)
h.flush()
h.zero(8192, (1 << 20) + 4096)
h.zero(1 << 20, 5 << 20, nbd.CMD_FLAG_NO_HOLE)
try:
    h.zero(4096, 6 << 20, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    raise SystemExit("a FAST_ZERO that must write zeroes succeeded")
except nbd.Error as e:
    assert e.errno == "ENOTSUP", e
h.zero(1 << 20, 7 << 20, nbd.CMD_FLAG_FAST_ZERO)
h.trim(4 << 20, 16 << 20)
h.flush()
' || fail "nbdsh: writes, zeroes and trims"
rbd export rbd/img "$tmp/exp" >/dev/null 2>&1 || fail "rbd export"
"$PYTHON" - "$tmp/exp" "$tmp/src" <<'PY' || fail "rbd export: not what was written"
import sys
e, s = (open(f, "rb").read() for f in sys.argv[1:])
M = 1 << 20
assert e[M:M + 4096] == b"a" * 4096
assert e[M + 4096:M + 12288] == bytes(8192)
assert e[M + 12288:M + 65536] == b"a" * (65536 - 12288)
assert e[2 * M + 3:2 * M + 780] == b"b" * 777
assert e[5 * M:6 * M] == bytes(M) and e[7 * M:8 * M] == bytes(M)
assert e[6 * M:7 * M] == s[6 * M:7 * M], "the refused FAST_ZERO wrote"
# Trim is advisory: untouched data or zeroes, nothing else.
t = e[16 * M:20 * M]
assert t == bytes(4 * M) or t == s[16 * M:20 * M]
PY
echo "write, FUA, flush, zero, fast zero, trim: as rbd export reads them"

# --- qemu-img compare: the NBD export against `rbd export`, and against
# qemu's own rbd driver where Debian's qemu-block-extra is installed.
if command -v qemu-img >/dev/null; then
  qemu-img compare -f raw -F raw "$u" "$tmp/exp" ||
    fail "qemu-img compare: the NBD export differs from rbd export"
  if qemu-img --help | grep -q '^Supported formats:.* rbd'; then
    qemu-img compare -f raw -F rbd "$u" "rbd:rbd/img:conf=$CEPH_CONF" ||
      fail "qemu-img compare: the NBD export differs from qemu's rbd driver"
    echo "qemu-img compare: = rbd export, = qemu's rbd driver"
  else
    echo "qemu-img compare: = rbd export (qemu has no rbd driver here)"
  fi
fi

# --- Every thread: the daemon's signals blocked, IO_FLUSHER as set for the
# main thread (it cannot be set without CAP_SYS_RESOURCE: then the flags
# must be clear on all, which the VM test covers the other way), memory
# locked.  Field 9 of a thread's stat is its flags (counted after the ')').
PF_MEMALLOC_NOIO=$((0x80000)) PF_LOCAL_THROTTLE=$((0x100000))
main_blk=$((0x$(awk '/^SigBlk:/ { print $2 }' /proc/$pid/status)))
main_fl=$(awk '{ sub (/.*\) /, ""); print $7 }' /proc/$pid/stat)
want=$((main_fl & (PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE)))
n=0 bad=0 names=
for t in /proc/$pid/task/*; do
  comm=$(cat "$t/comm") || continue
  blk=$((0x$(awk '/^SigBlk:/ { print $2 }' "$t/status")))
  fl=$(awk '{ sub (/.*\) /, ""); print $7 }' "$t/stat")
  n=$((n + 1))
  names="$names $comm"
  (( (blk & main_blk) == main_blk )) ||
    { echo "thread $comm: SigBlk $(printf %x $blk) lacks $(printf %x $main_blk)"; bad=1; }
  (( (fl & (PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE)) == want )) ||
    { echo "thread $comm: flags $(printf %#x $fl), the main thread's IO_FLUSHER bits $(printf %#x $want)"; bad=1; }
done
[ $bad = 0 ] || fail "threads of the daemon differ from its main thread"
(( n > 10 )) || fail "only $n threads: where are librados' ($names)?"
echo "threads: $n, each blocking $(printf %x $main_blk), IO_FLUSHER bits" \
  "$(printf %#x $want) as the main thread ($([ $want = 0 ] && echo 'not settable here' || echo set))"
if [ "${UBDKIT_SANITIZED:-no}" = no ]; then
  lck=$(awk '/^VmLck:/ { print $2 }' /proc/$pid/status)
  rss=$(awk '/^VmRSS:/ { print $2 }' /proc/$pid/status)
  # Kernel mappings (io_uring rings, vdso) are resident but never locked.
  spec=$(awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $0 } /^Rss:/ { r = $2 }
    /^VmFlags:/ { if ($0 ~ / (de|io|pf|mm)( |$)/) s += r; else if (r > 0 && $0 !~ / lo( |$)/) { print "unlocked: " r " kB: " m > "/dev/stderr"; bad = 1 } }
    END { print s + 0; exit bad }' /proc/$pid/smaps) ||
    fail "resident memory outside locked mappings"
  (( lck + spec >= rss )) || fail "VmLck $lck kB < VmRSS $rss kB - $spec kB"
  echo "memory: VmRSS $rss kB, all locked"
fi
kill $pid; wait $pid || fail "ubdkit serve rbd exited with $?"

# --- A snapshot: read-only, its content, writes refused by the server
# (libnbd's strict mode off, so the write reaches it); readonly=true too.
rbd snap create rbd/img@s1 >/dev/null 2>&1
snap_sha=$(sha_rbd rbd/img@s1)
rbd bench --io-type write --io-size 4096 --io-total 1M rbd/img >/dev/null 2>&1
for args in "snapshot=s1" "readonly=true"; do
  start_server sock pid rbd pool=rbd image=img $args
  u=$(uri_of "$sock")
  $NBDSH -u "$u" -c '
assert h.is_read_only()
h.set_strict_mode(0)
try:
    h.pwrite(b"x" * 4096, 0)
    raise SystemExit("a write succeeded")
except nbd.Error as e:
    assert e.errno in ("EPERM", "EROFS"), e
' || fail "$args: not read-only"
  [ "$args" = readonly=true ] ||
    { nbdcopy "$u" "$tmp/snap" && [ "$(sha_file "$tmp/snap")" = "$snap_sha" ]; } ||
    fail "$args: not the snapshot's content"
  kill $pid; wait $pid || true
done
echo "snapshot and readonly=true: read-only, writes refused, content as rbd export's"

# --- Holes of a thin image: by objects (4 MiB) with the object map, exact
# without it.  Then a trim of a whole object makes a hole again.
map_check () {
  "$PYTHON" - "$@" <<'PY' || fail "nbdinfo --map: [$2,$3) is not all $4: $(cat "$1")"
import json, sys
m = json.load(open(sys.argv[1]))
start, end, want = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
covered = 0
for x in m:
    lo, hi = max(x["offset"], start), min(x["offset"] + x["length"], end)
    if lo < hi:
        covered += hi - lo
        if ((x["type"] & 3) == 0) != (want == "data"):
            sys.exit(1)
sys.exit(0 if covered == end - start else 1)
PY
}
rbd create --size 64M rbd/thin
rbd create --size 64M --image-feature layering,exclusive-lock rbd/exact
for img in thin exact; do
  start_server sock pid rbd pool=rbd image=$img
  u=$(uri_of "$sock")
  nbdinfo --map --json "$u" > "$tmp/map0"
  map_check "$tmp/map0" 0 $((64 * MiB)) hole
  $NBDSH -u "$u" -c 'h.pwrite(b"d" * (1 << 20), 8 << 20); h.pwrite(b"e" * 4096, 40 << 20)'
  nbdinfo --map --json "$u" > "$tmp/map1"
  map_check "$tmp/map1" 0 $((8 * MiB)) hole
  map_check "$tmp/map1" $((8 * MiB)) $((9 * MiB)) data
  map_check "$tmp/map1" $((40 * MiB)) $((40 * MiB + 4096)) data
  map_check "$tmp/map1" $((44 * MiB)) $((64 * MiB)) hole
  if [ $img = exact ]; then
    map_check "$tmp/map1" $((9 * MiB)) $((40 * MiB)) hole
  else
    map_check "$tmp/map1" $((12 * MiB)) $((40 * MiB)) hole
  fi
  $NBDSH -u "$u" -c 'h.trim(4 << 20, 8 << 20)'
  nbdinfo --map --json "$u" > "$tmp/map2"
  map_check "$tmp/map2" 0 $((40 * MiB)) hole
  kill $pid; wait $pid || true
  echo "nbdinfo --map of a thin image ($img): holes but where written:" \
    "$("$PYTHON" -c 'import json, sys
print(", ".join("%d+%d %s" % (x["offset"] >> 20, x["length"] >> 20,
      "hole" if x["type"] & 1 else "data") for x in json.load(open(sys.argv[1]))))' "$tmp/map1") (MiB)"
done

# --- A resize while serving: the next connection sees it.
start_server sock pid rbd pool=rbd image=thin
u=$(uri_of "$sock")
[ "$(nbdinfo --size "$u")" = $((64 * MiB)) ] || fail "size before resize"
rbd resize --size 96M rbd/thin >/dev/null 2>&1 || fail "rbd resize"
for i in $(seq 50); do
  [ "$(nbdinfo --size "$u")" = $((96 * MiB)) ] && break
  sleep 0.1
done
[ "$(nbdinfo --size "$u")" = $((96 * MiB)) ] ||
  fail "after rbd resize to 96M, a new connection sees $(nbdinfo --size "$u")"
$NBDSH -u "$u" -c 'h.pwrite(b"z" * 4096, (96 << 20) - 4096)' ||
  fail "a write to the new last block"
kill $pid; wait $pid || true
echo "resize: 64 MiB -> 96 MiB seen by the next connection"
