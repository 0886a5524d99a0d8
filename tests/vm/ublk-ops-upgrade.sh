# ubdkit upgrade: fio verify runs on a mounted ext4 while the server is
# handed over, twice, to the ubdkit binary now on disk (a new file each
# time, as a package upgrade leaves it).  No I/O error, the server pid
# changes, the supervisor stays, the new server runs the new binary.
# With QUIESCE the device is quiesced and nothing is in flight at the
# change; without (the kernel lacks it, or the device uses the batch
# protocol), the old server exits and the kernel re-issues.
# UPGRADE_OPTS: more `ubdkit add` options (tests/vm/ublk-batch.sh).
. "$VMLIB"
ioerr0=$(dmesg | grep -c "I/O error" || true)   # earlier tests' are theirs
mkdir -p /tmp/ubd
cp "$UBDKIT" /tmp/ubd/ubdkit
U=/tmp/ubd/ubdkit
truncate -s 512M /tmp/up.img
# Every quiesce begins while the queue threads are busy for 300 ms (as in
# a long request): commits queued before it reach the kernel during or
# after its cancel, and requests it started wait for the thread to be
# dispatched.  Either way the quiesce must still end with every request
# completed (lib/ublk/ubdev.c, queue_sweep_idle).
# --log=stderr: the servers' lines, also after the upgrades, go to
# /tmp/up.err (in the background they would go to syslog).
dev=$(UBDKIT_TEST_QUIESCE_STALL=300 "$U" add -q 2 --log=stderr ${UPGRADE_OPTS:-} \
        file file=/tmp/up.img 2>/tmp/up.err) || { cat /tmp/up.err; fail "add"; }
id=$(dev_id "$dev")
if dev_flags "$dev" | grep -qw QUIESCE; then
  how=quiesced; expect="every request in flight completed"
else
  how="exit and re-issue (no QUIESCE)"; expect="no QUIESCE on this device"
fi
mkfs.ext4 -q -F "$dev" && mkdir -p /mnt/up && mount "$dev" /mnt/up || fail "ext4 on $dev"
rm -f /tmp/up.done /tmp/up.fail
( n=0
  while [ ! -e /tmp/up.done ] || [ $n = 0 ]; do
    n=$((n + 1))
    fio --name=up --directory=/mnt/up --size=48M --rw=randwrite --bs=4k \
        --ioengine=io_uring --direct=1 --iodepth=16 --verify=crc32c \
        --do_verify=1 --verify_fatal=1 --output=/tmp/up.out >/dev/null 2>&1 &&
      grep -q "err= 0" /tmp/up.out || { cp /tmp/up.out /tmp/up.fail; break; }
    echo $n > /tmp/up.runs
  done ) &
fio=$!
for round in 1 2 3; do
  sleep 3
  [ ! -e /tmp/up.fail ] || { cat /tmp/up.fail; fail "fio failed before upgrade $round"; }
  old=$(server_pid "$dev")
  sup=$(awk '{ print $4 }' /proc/$old/stat)
  cp "$UBDKIT" /tmp/ubd/ubdkit.new && mv /tmp/ubd/ubdkit.new "$U"
  ino=$(stat -c %i "$U")
  [ "$(stat -L -c %i /proc/$old/exe)" != "$ino" ] || fail "the binary was not replaced"
  st=0; "$U" upgrade "$id" > /tmp/up.msg 2>&1 || st=$?
  [ $st = 0 ] || { cat /tmp/up.msg; "$UBDKIT" list; fail "ubdkit upgrade $id (round $round): exit $st"; }
  grep -q "$expect" /tmp/up.msg || { cat /tmp/up.msg; fail "upgrade did not say: $expect"; }
  new=$(server_pid "$dev")
  [ -n "$new" ] && [ "$new" != "$old" ] && [ "$new" != 0 ] || fail "server pid $old -> '$new'"
  [ "$(stat -L -c %i /proc/$new/exe)" = "$ino" ] || fail "server $new does not run the new binary"
  [ "$(awk '{ print $4 }' /proc/$new/stat)" = "$sup" ] || fail "the supervisor changed"
  echo "round $round: server $old -> $new ($how); $(tail -n 1 /tmp/up.msg)"
done
touch /tmp/up.done
wait $fio || true
[ ! -e /tmp/up.fail ] || { cat /tmp/up.fail; fail "fio verify failed across upgrades"; }
ok "fio verify on ext4 ran across 3 upgrades ($how, $(cat /tmp/up.runs) runs)"
umount /mnt/up
grep -q "have not settled" /tmp/up.err && { cat /tmp/up.err; fail "a quiesce did not settle"; }
echo "queues that met fetches the kernel left armed, settled: $(grep -c 'left armed' /tmp/up.err || true)"
e2fsck -f -n "$dev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck after upgrades"; }
roundtrip "$dev" "after upgrades"
"$U" del "$id" || fail "del after upgrades"
[ ! -b "$dev" ] || fail "$dev still exists"
[ "$(dmesg | grep -c "I/O error" || true)" = "$ioerr0" ] || fail "the kernel saw I/O errors"
ok "fsck clean, the new server serves, no I/O error reached the kernel"
