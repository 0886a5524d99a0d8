# Guest side of test-vm-disks.sh: /dev/vda and /dev/vdb are qemu virtio
# disks whose storage is `ubdkit serve` on the host (vdb through the nbd
# backend).  Make ext4 on each, write a file the host can regenerate, check
# it reads back after a remount; the host then checks the data through
# ubdkit after the guest is gone.
. "$VMLIB"
for d in /dev/vda /dev/vdb; do
  [ -b $d ] || fail "$d missing (qemu did not attach the NBD disk)"
  [ "$(/usr/sbin/blockdev --getsize64 $d)" = $((256 << 20)) ] ||
    fail "$d: size $(/usr/sbin/blockdev --getsize64 $d), expected 256 MiB"
  fs_roundtrip $d
  mount $d /mnt/t || fail "mount $d"
  awk 'BEGIN { for (i = 0; i < 200000; i++) printf "%07d ubdkit virtio disk\n", i }' \
    > /mnt/t/big
  sync
  umount /mnt/t
  mount $d /mnt/t || fail "remount $d"
  [ $(($(wc -c < /mnt/t/big))) = 5400000 ] || fail "$d: /big has the wrong size"
  umount /mnt/t
  ok "ext4 on $d, a virtio disk served by ubdkit"
done
sync
