#!/usr/bin/env bash
# The kernel's NBD client against ubdkit serve, inside the test VM: Debian's
# nbd-client attaches /dev/nbd0 over TCP (memory backend) and /dev/nbd1
# over a Unix socket (file backend on a tmpfs file).  On each: ext4 made,
# written, fsck'd clean and the checksums kept across a remount; fio randrw
# with crc32c verify on the raw device; nbd-client -d detaches; the server
# exits 0 on SIGTERM.  No kernel warnings (vm-run checks).
source "${srcdir:-.}/functions.sh"
requires_prog nbd-client
requires_prog fio
requires_prog mkfs.ext4
make_tmpdir

cat > "$tmp/nbd-client.sh" <<'EOF'
fail () { echo "FAIL: $*"; [ -n "${1:-}" ] && cat /tmp/*.err 2>/dev/null; exit 1; }
ok () { echo "ok - $*"; }

# start NAME ARGS...: ubdkit serve ARGS in the background, logging to
# /tmp/NAME.err; waits for its "ready:" line; the pid goes into $NAME.
start () {
  _n=$1; shift
  "$UBDKIT" serve --log=stderr "$@" 2>/tmp/$_n.err &
  eval "$_n=$!"
  for _i in $(seq 100); do
    grep -q 'ready:' /tmp/$_n.err && return 0
    kill -0 $! 2>/dev/null || fail "ubdkit serve $* exited early"
    sleep 0.1
  done
  fail "ubdkit serve $* not ready after 10 s"
}

# iof_check PID: every thread has PF_MEMALLOC_NOIO|PF_LOCAL_THROTTLE.
iof_check () {
  for _st in /proc/$1/task/*/stat; do
    _f=$(sed 's/.*) //' "$_st" | cut -d' ' -f7)
    [ $((_f & 0x00180000)) -eq $((0x00180000)) ] ||
      fail "thread $_st ($(cat ${_st%stat}comm)) flags $(printf 0x%08x $_f): IO_FLUSHER bits missing"
  done
}

# fs_roundtrip DEV
fs_roundtrip () {
  mkfs.ext4 -q -F "$1" || fail "mkfs.ext4 $1"
  mkdir -p /mnt/t
  mount -t ext4 "$1" /mnt/t || fail "mount $1"
  for i in 1 2 3 4; do
    dd if=/dev/urandom of=/mnt/t/f$i bs=64k count=$((i * 16)) 2>/dev/null ||
      fail "writing /mnt/t/f$i on $1"
  done
  (cd /mnt/t && md5sum f1 f2 f3 f4) > /tmp/sums
  sync
  umount /mnt/t || fail "umount $1"
  e2fsck -f -n "$1" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "e2fsck -f -n $1"; }
  mount -t ext4 "$1" /mnt/t || fail "remount $1"
  (cd /mnt/t && md5sum -c /tmp/sums) || fail "checksums after remount of $1"
  umount /mnt/t
}

# fio_verify DEV
fio_verify () {
  fio --name=verify --filename="$1" --ioengine=libaio --direct=1 \
      --rw=randrw --bs=4k-64k --iodepth=16 --size=64M --verify=crc32c \
      --verify_fatal=1 --output=/tmp/fio.out >/dev/null 2>&1 ||
    { cat /tmp/fio.out; fail "fio randrw verify on $1"; }
  grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio errors on $1"; }
  grep -E '^ +(read|write):' /tmp/fio.out
}

# detach DEV
detach () {
  nbd-client -d "$1" || fail "nbd-client -d $1"
  for _i in $(seq 50); do
    [ "$(cat /sys/block/${1#/dev/}/size)" = 0 ] && return 0
    sleep 0.1
  done
  fail "$1 still has a size after nbd-client -d"
}

# stop NAME PID: SIGTERM, and the server must exit 0.
stop () {
  kill -TERM "$2"
  wait "$2"; _st=$?
  [ $_st = 0 ] || fail "ubdkit serve ($1) exited $_st on SIGTERM"
  ok "$1 server exited 0 on SIGTERM"
}

truncate -s 128M /tmp/file.img
start mem --bind 127.0.0.1 -p 10809 memory size=256M
start file -U /tmp/file.sock file file=/tmp/file.img
iof_check $mem
iof_check $file
ok "both servers up; all their threads are IO_FLUSHERs"

nbd-client -N '' 127.0.0.1 10809 /dev/nbd0 || fail "nbd-client over TCP"
nbd-client -N '' -unix /tmp/file.sock /dev/nbd1 || fail "nbd-client over the Unix socket"
[ "$(blockdev --getsize64 /dev/nbd0)" = 268435456 ] ||
  fail "/dev/nbd0 size $(blockdev --getsize64 /dev/nbd0), expected 256M"
[ "$(blockdev --getsize64 /dev/nbd1)" = 134217728 ] ||
  fail "/dev/nbd1 size $(blockdev --getsize64 /dev/nbd1), expected 128M"
ok "nbd0 (TCP, memory) and nbd1 (Unix, file) attached with the right sizes"

for d in /dev/nbd0 /dev/nbd1; do
  fs_roundtrip $d
  ok "ext4 on $d: written, fsck clean, checksums kept across remount"
done
# The file backend really wrote into its file: compare through the device.
sync
cmp /dev/nbd1 /tmp/file.img || fail "/dev/nbd1 differs from its backing file"
ok "/dev/nbd1 reads back identical to /tmp/file.img"

for d in /dev/nbd0 /dev/nbd1; do
  fio_verify $d
  ok "fio randrw verify=crc32c libaio direct iodepth 16 on $d"
done

detach /dev/nbd0
detach /dev/nbd1
ok "both detached"
stop memory $mem
stop file $file
grep -iE 'error|warn' /tmp/mem.err /tmp/file.err && fail "the servers logged errors or warnings"
ok "no errors or warnings in the servers' logs"
# vm-run fails on kernel warnings; I/O errors are the test's business.
if dmesg | grep -E 'I/O error|Other side returned error|nbd.*(timed out|Receive control failed)'; then
  fail "the kernel saw I/O errors from the NBD devices (above)"
fi
ok "no I/O errors in the kernel log"
EOF

"$srcdir/vm/vm-run" --mem 1536 --timeout 240 --carry fio "$tmp/nbd-client.sh"
