#!/usr/bin/env bash
# ext4 on a memory disk through nbdfuse + a loop device: mkfs, write files,
# fsck -f must be clean, then reconnect afresh and verify the checksums.
source "${srcdir:-.}/functions.sh"
requires_root
for p in nbdfuse fusermount3 losetup mkfs.ext4 e2fsck mount umount mountpoint; do
  requires_prog $p
done
[ -c /dev/fuse ] || skip "/dev/fuse is not available"
[ -e /dev/loop-control ] || losetup -f >/dev/null 2>&1 ||
  skip "no loop devices (/dev/loop-control missing)"
make_tmpdir
start_server srv_sock srv_pid memory size=128M
fuse=$tmp/fuse mnt=$tmp/mnt
mkdir "$fuse" "$mnt"
loop=

# attach: mount the export with nbdfuse as $fuse/disk and loop it to $loop.
attach () {
  rm -f "$tmp/nbdfuse.pid"
  nbdfuse -P "$tmp/nbdfuse.pid" "$fuse/disk" --unix "$srv_sock" &
  fpid=$!
  cleanup_fn "mountpoint -q '$fuse' && fusermount3 -u '$fuse'; wait $fpid 2>/dev/null"
  for (( i=0; i<200; i++ )); do
    [ -s "$tmp/nbdfuse.pid" ] && break
    kill -0 $fpid 2>/dev/null || skip "nbdfuse could not mount (FUSE unusable here?)"
    sleep 0.05
  done
  [ -s "$tmp/nbdfuse.pid" ] || fail "nbdfuse did not become ready"
  [ "$(stat -c %s "$fuse/disk")" -eq $((128*1024*1024)) ] ||
    fail "nbdfuse file has the wrong size"
  loop=$(losetup --find --show "$fuse/disk") ||
    skip "losetup could not attach a loop device"
  cleanup_fn "losetup -d '$loop' 2>/dev/null"
}
detach () {
  losetup -d "$loop" || fail "losetup -d $loop failed"
  fusermount3 -u "$fuse" || fail "fusermount3 -u failed"
  wait $fpid || fail "nbdfuse exited with an error"
}
mount_fs () {
  mount -t ext4 "$loop" "$mnt" || fail "mount $loop failed"
  cleanup_fn "mountpoint -q '$mnt' && { umount '$mnt' || umount -l '$mnt'; }"
}

attach
mkfs.ext4 -q -F "$loop" || fail "mkfs.ext4 failed"
mount_fs
mkdir "$mnt/dir"
head -c 3000000 /dev/urandom > "$mnt/a"
head -c 5242880 /dev/urandom > "$mnt/dir/b"
for i in $(seq 1 50); do echo "small file $i" > "$mnt/dir/s$i"; done
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$tmp/sums"
umount "$mnt" || fail "umount failed"
e2fsck -f -n "$loop" || fail "e2fsck -f reported problems after the first mount"

# Start again from a new NBD connection so nothing comes from caches.
detach
attach
e2fsck -f -n "$loop" || fail "e2fsck -f reported problems after reconnecting"
mount_fs
(cd "$mnt" && sha256sum --quiet -c "$tmp/sums") || fail "file checksums differ"
[ "$(wc -l < "$tmp/sums")" -eq 52 ] || fail "expected 52 files"
umount "$mnt" || fail "final umount failed"
detach
