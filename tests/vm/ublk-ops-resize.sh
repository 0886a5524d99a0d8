# ubdkit resize: the backing file grows, `ubdkit resize` gives the device
# the new size (UPDATE_SIZE), resize2fs grows the mounted ext4, fsck is
# clean.  Sizes beyond the backend, and shrinking without --shrink, are
# refused.  Kernels without UPDATE_SIZE: resize refuses, saying so.
. "$VMLIB"
MiB=1048576
truncate -s 64M /tmp/rs.img
add_dev dev file file=/tmp/rs.img
id=$(dev_id "$dev")
size_is () {
  [ "$(cat /sys/block/ublkb$id/size)" = $(($1 * 2048)) ] ||
    fail "$2: /sys/block/ublkb$id/size is $(cat /sys/block/ublkb$id/size), not $(($1 * 2048))"
  [ "$(/usr/sbin/blockdev --getsize64 "$dev")" = $(($1 * MiB)) ] ||
    fail "$2: blockdev --getsize64 $dev is $(/usr/sbin/blockdev --getsize64 "$dev"), not $(($1 * MiB))"
}
size_is 64 "before resize"

if ! "$UBDKIT" features | grep -qw UPDATE_SIZE; then
  truncate -s 128M /tmp/rs.img
  if "$UBDKIT" resize "$id" 2>/tmp/rs.err; then
    fail "resize succeeded on a kernel without UPDATE_SIZE"
  fi
  grep -q "kernel lacks UPDATE_SIZE" /tmp/rs.err ||
    { cat /tmp/rs.err; fail "the refusal does not say the kernel lacks UPDATE_SIZE"; }
  size_is 64 "after the refused resize"
  roundtrip "$dev" "after the refused resize"
  del_dev "$dev"
  ok "no UPDATE_SIZE: resize refused ($(cat /tmp/rs.err)); the device serves on"
  exit 0
fi

"$UBDKIT" list --json | grep '"device": "'"$dev"'"' | grep -q UPDATE_SIZE ||
  { "$UBDKIT" list --json; fail "the device was not created with UPDATE_SIZE"; }
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 $dev"
mkdir -p /mnt/rs && mount "$dev" /mnt/rs || fail "mount $dev"
dd if=/dev/urandom of=/mnt/rs/before bs=1M count=20 2>/dev/null
md5sum /mnt/rs/before > /tmp/rs.sums

truncate -s 192M /tmp/rs.img
"$UBDKIT" resize "$id" > /tmp/rs.out || fail "ubdkit resize $id"
grep -q "67108864 -> 201326592" /tmp/rs.out || { cat /tmp/rs.out; fail "resize did not report the sizes"; }
size_is 192 "after resize"
ok "grown with the backing file: $(cat /tmp/rs.out)"

resize2fs "$dev" >/tmp/rs2fs.out 2>&1 || { cat /tmp/rs2fs.out; fail "online resize2fs $dev"; }
kb=$(df -k /mnt/rs | awk 'NR == 2 { print $2 }')
[ "$kb" -gt 150000 ] || { df -k /mnt/rs; fail "the filesystem did not grow ($kb KiB)"; }
# Fill past the old end of the device.
dd if=/dev/urandom of=/mnt/rs/after bs=1M count=100 2>/dev/null || fail "writing into the grown space"
md5sum /mnt/rs/after >> /tmp/rs.sums
umount /mnt/rs
e2fsck -f -n "$dev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck after the resize"; }
mount "$dev" /mnt/rs || fail "remount"
(cd /mnt/rs && md5sum -c /tmp/rs.sums) >/dev/null || fail "checksums after the resize"
umount /mnt/rs
ok "resize2fs grew the mounted ext4 to $kb KiB, 100 MiB written past the old end, fsck clean"

if "$UBDKIT" resize "$id" 256M 2>/tmp/rs.err; then fail "resize beyond the backend succeeded"; fi
grep -q "more than the backend has" /tmp/rs.err || { cat /tmp/rs.err; fail "resize beyond the backend: no reason given"; }
if "$UBDKIT" resize "$id" 128M 2>/tmp/rs.err; then fail "shrink without --shrink succeeded"; fi
grep -q -- "--shrink" /tmp/rs.err || { cat /tmp/rs.err; fail "shrink refusal does not mention --shrink"; }
size_is 192 "after the refused resizes"
ok "refused: beyond the backend, and shrinking without --shrink"

"$UBDKIT" resize --shrink "$id" 128M >/dev/null || fail "resize --shrink $id 128M"
size_is 128 "after --shrink"
n=$(dd if="$dev" bs=1M skip=130 count=1 iflag=direct 2>/dev/null | wc -c)
[ "$n" = 0 ] || fail "read $n bytes beyond the shrunk end"
roundtrip "$dev" "after shrinking"
"$UBDKIT" resize "$id" >/dev/null || fail "resize back to the backend's size"
size_is 192 "grown again"
del_dev "$dev"
ok "resize --shrink to 128M, then back to the backend's 192M"
