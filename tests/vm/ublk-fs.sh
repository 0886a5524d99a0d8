# ext4 on ublk devices over the file and memory backends.
. "$VMLIB"
truncate -s 256M /tmp/fs.img
add_dev dev file file=/tmp/fs.img
fs_roundtrip "$dev"
del_dev "$dev"
ok "ext4 on a file-backed device"
# The data is in the backing file: serve it again and check.
add_dev dev -q 2 file file=/tmp/fs.img
mount "$dev" /mnt/t || fail "mount after re-add"
(cd /mnt/t && md5sum -c /tmp/sums) >/dev/null || fail "checksums after re-add"
umount /mnt/t
del_dev "$dev"
ok "data kept in the backing file across devices"
add_dev dev -q 2 memory size=256M
fs_roundtrip "$dev"
del_dev "$dev"
ok "ext4 on a memory device"
