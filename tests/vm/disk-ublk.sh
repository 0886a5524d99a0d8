# Guest side of test-vm-disks.sh: a ublk device from `ubdkit add` used the
# way a VM uses a raw disk (qemu's block layer, O_DIRECT, io_uring: what
# -drive file=/dev/ublkbN,format=raw,cache=none,aio=io_uring does), and the
# nbd backend under `ubdkit add`: /dev/ublkbN backed by another ubdkit.
. "$VMLIB"
add_dev dev memory size=64M
qemu-io -f raw -n -i io_uring -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 4M 64k' \
  -c 'flush' -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 4M 64k' -c 'read -P 0 8M 1M' \
  "$dev" > /tmp/qio.out 2>&1 || { cat /tmp/qio.out; fail "qemu-io on $dev"; }
grep -qi 'fail\|error\|mismatch' /tmp/qio.out && { cat /tmp/qio.out; fail "qemu-io on $dev"; }
del_dev "$dev"
ok "qemu's block layer on a ublk device (raw, cache=none, io_uring)"

"$UBDKIT" serve -U /tmp/remote.sock memory size=128M 2>/tmp/remote.log &
rpid=$!
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  [ -S /tmp/remote.sock ] && break
  sleep 0.2
done
add_dev dev -q 2 nbd uri='nbd+unix:///?socket=/tmp/remote.sock' connections=2
[ "$(/usr/sbin/blockdev --getsize64 "$dev")" = $((128 << 20)) ] || fail "size of $dev"
fs_roundtrip "$dev"
del_dev "$dev"
# The data is on the remote: a second device over it sees the same files.
add_dev dev nbd uri='nbd+unix:///?socket=/tmp/remote.sock'
mount "$dev" /mnt/t || fail "mount $dev again"
(cd /mnt/t && md5sum -c /tmp/sums) >/dev/null || fail "checksums through a new device"
umount /mnt/t
del_dev "$dev"
kill $rpid
ok "ubdkit add nbd: ext4 on a ublk device backed by a remote ubdkit"
