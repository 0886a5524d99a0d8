# Crash recovery: fio writes and verifies on a mounted ext4 while the
# server is killed with SIGKILL three times.  The supervisor restarts it,
# the new server re-attaches (user recovery, re-issue), and fio never sees
# an error; the data verifies and fsck is clean.
. "$VMLIB"
truncate -s 512M /tmp/rec.img
add_dev dev -q 2 file file=/tmp/rec.img
mkfs.ext4 -q -F "$dev" && mkdir -p /mnt/rec && mount "$dev" /mnt/rec
fio --name=rec --directory=/mnt/rec --size=64M --rw=randwrite --bs=4k \
    --ioengine=io_uring --direct=1 --iodepth=16 --verify=crc32c \
    --do_verify=1 --verify_fatal=1 --output=/tmp/rec.out >/dev/null 2>&1 &
fio=$!
for round in 1 2 3; do
  sleep 2
  old=$(server_pid "$dev")
  [ -n "$old" ] || fail "no server pid for $dev (round $round)"
  kill -9 "$old"
  for i in $(seq 1 100); do
    new=$(server_pid "$dev")
    [ -n "$new" ] && [ "$new" != "$old" ] && [ "$new" != 0 ] && break
    sleep 0.1
  done
  [ "$new" != "$old" ] || fail "server not restarted after kill $round"
  echo "round $round: server $old killed, $new serving"
done
wait $fio || { cat /tmp/rec.out; fail "fio failed across server crashes"; }
grep -q "err= 0" /tmp/rec.out || { cat /tmp/rec.out; fail "fio reported errors"; }
ok "fio verify on ext4 survived 3 server kills"
umount /mnt/rec
e2fsck -f -n "$dev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck after crashes"; }
ok "fsck clean after crashes"
del_dev "$dev"
dmesg | grep -q "I/O error" && fail "the kernel saw I/O errors"
ok "no I/O error reached the kernel"
