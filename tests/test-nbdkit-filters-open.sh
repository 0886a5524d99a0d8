#!/usr/bin/env bash
# nbdkit filters that read their next layer while opening (gzip, xz, tar,
# luks, ext2), that start threads (scan, exitwhen, pause), that end the
# server (exitlast, exitwhen), and that refuse requests or connections
# (protect, checkwrite, limit), each served by ubdkit over its native file
# or memory backend.  Where nbdkit can serve the same command line, the
# bytes, size, capabilities and map must be the same (filter-functions.sh);
# the behaviours are checked with a client.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires_prog nbdinfo
requires_prog nbdcopy
requires_prog gzip
requires_prog xz
requires_prog tar
requires $NBDSH -c pass
filterdir=$(pkg-config --variable=filterdir nbdkit 2>/dev/null) ||
  skip "pkg-config cannot find nbdkit's filterdir"
[ -f "$filterdir/nbdkit-gzip-filter.so" ] || skip "no nbdkit filters in $filterdir"
"$UBDKIT" serve --help | grep -q -- '--filter' || skip "ubdkit built without the nbdkit host"
make_tmpdir
export tmp
source "${srcdir:-.}/filter-functions.sh"

# The payload, and the containers the filters open it from.
head -c 4M /dev/urandom > "$tmp/r.img"
gzip -c "$tmp/r.img" > "$tmp/r.gz"
xz -c --block-size=1MiB "$tmp/r.img" > "$tmp/r.xz"
(cd "$tmp" && tar cf r.tar r.img)
mkdir "$tmp/fsdir" && cp "$tmp/r.img" "$tmp/fsdir/disk.raw"
if command -v mke2fs >/dev/null; then
  mke2fs -q -t ext4 -d "$tmp/fsdir" "$tmp/fs.img" 16M || fail "mke2fs -d"
fi

# What the bare file backends differ in (left out of the comparisons).
args=("file=$tmp/r.img")
serve_both file file
file_ignore=$(diff <(fields "$tmp/n.json") <(fields "$tmp/u.json") |
              sed -n 's/^> \([^ ]*\) .*/\1/p' | tr '\n' ' ')
want=$(sha256sum < "$tmp/r.img")

# same_as_nbdkit FILE FILTER-OPTIONS... [-- KEY=VALUE...]: the chain over
# ubdkit's file backend and nbdkit's file plugin agree, and a container
# filter gives back the payload.
same_as_nbdkit () {
  local file=$1 opts=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  args=("$@" "file=$file")
  ignore=$file_ignore compare_one file file "${opts[@]}"
}
for spec in "gzip r.gz" "xz r.xz" "tar r.tar tar-entry=r.img"; do
  set -- $spec
  same_as_nbdkit "$tmp/$2" --filter="$1" -- "${@:3}"
  [ "$(cat "$tmp/u.sum")" = "$want" ] || fail "$1: not the payload"
done
if [ -f "$tmp/fs.img" ] && [ -f "$filterdir/nbdkit-ext2-filter.so" ]; then
  same_as_nbdkit "$tmp/fs.img" --filter=ext2 -- ext2file=/disk.raw
else
  echo "$0: ext2: no mke2fs or no ext2 filter here, not compared"
fi

# luks: an image qemu-img made, filled through nbdkit's luks filter, read
# back through ubdkit's chain, and not in the clear in the image.
# (qemu-img times its PBKDF on the CPU clock and gives up now and then on
# a busy machine, "Unable to get accurate CPU usage": tried again.)
for i in 1 2 3 4 5; do
  qemu-img create -q -f luks --object secret,id=sec0,data=PASS \
    -o key-secret=sec0,iter-time=100 "$tmp/l.img" 8M 2>"$tmp/err" && break
  rm -f "$tmp/l.img"
done
[ -f "$tmp/l.img" ] || fail "qemu-img create -f luks: $(cat "$tmp/err")"
nbdkit -U - --filter=luks file "$tmp/l.img" passphrase=PASS \
  --run 'nbdcopy "$tmp/r.img" "$uri"' || fail "writing the luks image"
same_as_nbdkit "$tmp/l.img" --filter=luks -- passphrase=PASS
got=$("$UBDKIT" serve -U - --filter=luks file file="$tmp/l.img" passphrase=PASS \
        --run 'nbdcopy "$uri" - | head -c 4M | sha256sum' 2>"$tmp/err") ||
  fail "luks: $(cat "$tmp/err")"
[ "$got" = "$want" ] || fail "luks: not what was written through nbdkit's filter"
cmp -s -n 4096 -i 2M:0 "$tmp/l.img" "$tmp/r.img" &&
  fail "luks: the payload is in the image in the clear"
# (A wrong passphrase: Debian's nbdkit 1.32.5 luks filter crashes in its
# cleanup after the failed unlock, under nbdkit too; fixed in 1.33.6.  The
# VM test checks the error line ubdkit add gives.)

# Filters whose answers nbdkit shares: scan (its thread reads ahead),
# cacheextents, blocksize-policy, rate, retry-request.
same_as_nbdkit "$tmp/r.img" --filter=scan
same_as_nbdkit "$tmp/r.img" --filter=cacheextents
same_as_nbdkit "$tmp/r.img" --filter=blocksize-policy -- \
  blocksize-preferred=64K blocksize-minimum=512
same_as_nbdkit "$tmp/r.img" --filter=rate -- rate=1G
same_as_nbdkit "$tmp/r.img" --filter=retry-request

# run_py NAME 'PYTHON' SERVE-ARGS...: ubdkit serve SERVE-ARGS with a Python
# client (libnbd's binding as h, connected to $uri) as its --run command.
run_py () {
  local name=$1 code=$2
  shift 2
  printf 'import nbd, sys, errno\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\n%s\n' \
    "$code" > "$tmp/$name.py"
  "$UBDKIT" serve -U - "$@" --run "$PYTHON $tmp/$name.py \"\$uri\"" \
    2>"$tmp/$name.err" || fail "$name: $(cat "$tmp/$name.err")"
  echo "$0: $name: ok"
}
run_py protect '
try:
    h.pwrite(b"x" * 512, 0)
    sys.exit("a write to the protected range was accepted")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
h.pwrite(b"x" * 512, 8192)
assert h.pread(512, 8192) == b"x" * 512' \
  --filter=protect memory size=1M protect=0-4095
cp "$tmp/r.img" "$tmp/c.img"
run_py checkwrite '
d = h.pread(4096, 0)
h.pwrite(d, 0)
try:
    h.pwrite(bytes(b ^ 1 for b in d), 0)
    sys.exit("checkwrite accepted a different write")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e' \
  --filter=checkwrite file file="$tmp/c.img"
cmp -s "$tmp/c.img" "$tmp/r.img" || fail "checkwrite: the file changed"
run_py limit '
h2 = nbd.NBD()
try:
    h2.connect_uri(sys.argv[1])
    h2.pread(512, 0)
    sys.exit("limit=1: a second connection was served")
except nbd.Error:
    pass
assert len(h.pread(512, 0)) == 512' \
  --filter=limit memory size=1M limit=1

# pause: a read waits while paused, and completes on resume.
run_py pause '
import socket, threading, time
ctl = socket.socket(socket.AF_UNIX)
ctl.connect(sys.argv[2] if len(sys.argv) > 2 else "'"$tmp"'/pause.sock")
ctl.sendall(b"p"); assert ctl.recv(64).startswith(b"P"), "pause not acknowledged"
done = []
t = threading.Thread(target=lambda: done.append(h.pread(512, 0)))
t.start(); time.sleep(0.5)
assert not done, "a read completed while paused"
ctl.sendall(b"r"); assert ctl.recv(64).startswith(b"R")
t.join(10)
assert done, "the read did not complete on resume"' \
  --filter=pause memory size=1M pause-control="$tmp/pause.sock"

# exitlast: the server exits 0 when its last client leaves.
"$UBDKIT" serve -U "$tmp/el.sock" --filter=exitlast memory size=1M \
  2>"$tmp/el.err" &
el=$!
cleanup_fn "kill $el 2>/dev/null"
for i in $(seq 100); do [ -S "$tmp/el.sock" ] && break; sleep 0.05; done
nbdinfo --size "nbd+unix:///?socket=$tmp/el.sock" >/dev/null || fail "exitlast: no answer"
for i in $(seq 100); do kill -0 $el 2>/dev/null || break; sleep 0.1; done
kill -0 $el 2>/dev/null && fail "exitlast: still serving after its client left"
wait $el || fail "exitlast: exit status $?: $(cat "$tmp/el.err")"
echo "$0: exitlast: exit 0 after the last client"

# exitwhen: its thread sees the file appear and ends the server (exit 0).
"$UBDKIT" serve -U "$tmp/ew.sock" --filter=exitwhen memory size=1M \
  exit-when-file-created="$tmp/stop" exit-when-poll=1 2>"$tmp/ew.err" &
ew=$!
cleanup_fn "kill $ew 2>/dev/null"
for i in $(seq 100); do [ -S "$tmp/ew.sock" ] && break; sleep 0.05; done
nbdinfo --size "nbd+unix:///?socket=$tmp/ew.sock" >/dev/null || fail "exitwhen: no answer"
kill -0 $ew 2>/dev/null || fail "exitwhen: exited before the file appeared"
touch "$tmp/stop"
for i in $(seq 100); do kill -0 $ew 2>/dev/null || break; sleep 0.1; done
kill -0 $ew 2>/dev/null && fail "exitwhen: still serving 10 s after the file appeared"
wait $ew || fail "exitwhen: exit status $?: $(cat "$tmp/ew.err")"
echo "$0: exitwhen: exit 0 once the file appeared"
exit 0
