# A ublk device over rbd/rsz follows the image's size: the host resizes the
# image (on the guest's request over the network, tests/ceph/ctl.py) and the
# server, told by librbd's header watch, gives the device the new size with
# UPDATE_SIZE, growing and then shrinking it, while it serves.  Kernels
# without UPDATE_SIZE: the device keeps its size, serves on, and the server
# says why in its log.  tests/test-vm-rbd.sh checks rbd/rsz afterwards.
. "$VMLIB"
conf=/etc/ceph/vm.conf
MiB=1048576
result () { echo "$*" >> /tmp/results; }
host_do () {
  _r=$(echo "$1" | timeout 100 nc -w 90 "$CTL_ADDR" "$CTL_PORT") || true
  [ "$_r" = "$2" ] || fail "the host, asked '$1': '$_r'"
}
pattern () { yes "ubdkit rbd resize block at $1" | head -c 4096; }
put () { pattern "$1" | dd of="$dev" bs=4096 seek=$(($1 / 4096)) oflag=direct conv=notrunc 2>/dev/null || fail "write at $1 of $dev"; }
check () {
  pattern "$1" > /tmp/want
  dd if="$dev" bs=4096 skip=$(($1 / 4096)) count=1 iflag=direct 2>/dev/null |
    cmp -s - /tmp/want || fail "4 KiB at $1 of $dev do not read back"
}
sectors () { cat /sys/block/ublkb$id/size; }
# wait_size MiB SECS: until the device has MiB, both in sysfs and to blockdev.
wait_size () {
  _t=$(uptime_s)
  while [ "$(sectors)" != $(($1 * 2048)) ]; do
    [ "$(since "$_t" | cut -d. -f1)" -lt "$2" ] ||
      { cat /tmp/rsz.log; fail "$dev: $(sectors) sectors after $2 s, not $(($1 * 2048))"; }
    sleep 0.1
  done
  [ "$(/usr/sbin/blockdev --getsize64 "$dev")" = $(($1 * MiB)) ] ||
    fail "$dev: blockdev --getsize64 says $(/usr/sbin/blockdev --getsize64 "$dev"), not $(($1 * MiB))"
  WAITED=$(since "$_t")
}

add_dev dev --log /tmp/rsz.log rbd pool=rbd image=rsz conf=$conf
id=$(dev_id "$dev")
# Should a step hang: what the server and its threads are doing, on the
# console, after 100 s.
pid=$(server_pid "$dev")
(sleep 100
 echo "rbd-resize.sh: still running after 100 s: the server's log, its threads' kernel stacks:"
 cat /tmp/rsz.log
 for t in /proc/$pid/task/*; do
   echo "--- thread ${t##*/} $(cat $t/comm) state $(awk '{print $3}' $t/stat) wchan $(cat $t/wchan 2>/dev/null)"
   cat $t/stack 2>/dev/null
 done
 echo "--- sectors $(sectors)") &
dog=$!
wait_size 32 1
put 0
put $((32 * MiB - 4096))

if ! "$UBDKIT" features | grep -qw UPDATE_SIZE; then
  t0=$(uptime_s)
  host_do "resize rsz 48M" ok
  # The server hears of it within librbd's watch; it must say why it
  # cannot follow.
  while ! grep -q "cannot change a ublk device's size" /tmp/rsz.log; do
    [ "$(since "$t0" | cut -d. -f1)" -lt 60 ] || { cat /tmp/rsz.log; fail "no word in the log of the new size"; }
    sleep 0.2
  done
  wait_size 32 1
  check 0
  check $((32 * MiB - 4096))
  kill $dog 2>/dev/null || true
  del_dev "$dev"
  result rsz 48
  ok "no UPDATE_SIZE: rbd/rsz grew to 48 MiB, $dev kept 32 MiB and served on; the log says: $(grep -o "this kernel cannot.*" /tmp/rsz.log | head -1)"
  dd if=/tmp/results of=/dev/vda conv=notrunc 2>/dev/null || fail "cannot write the results to /dev/vda"
  exit 0
fi

"$UBDKIT" list --json | grep '"device": "'"$dev"'"' | grep -q UPDATE_SIZE ||
  { "$UBDKIT" list --json; fail "$dev was not created with UPDATE_SIZE"; }
# Grow while a reader runs over the device.
(while [ ! -e /tmp/rsz.stop ]; do dd if="$dev" of=/dev/null bs=64k iflag=direct 2>/dev/null || exit 1; done) &
rd=$!
host_do "resize rsz 48M" ok
wait_size 48 60
grown=$WAITED
kill -0 $rd 2>/dev/null || fail "the reader failed while the device grew"
put $((44 * MiB))
check $((44 * MiB))
check $((32 * MiB - 4096))
touch /tmp/rsz.stop
wait $rd || fail "the reader failed while the device grew"
ok "rbd/rsz grown to 48 MiB by the host: $dev followed in $grown s (a reader ran throughout), written past its old end"

host_do "resize rsz 40M" ok
wait_size 40 60
shrunk=$WAITED
n=$(dd if="$dev" bs=1M skip=40 count=1 iflag=direct 2>/dev/null | wc -c)
[ "$n" = 0 ] || fail "read $n bytes beyond the shrunk end of $dev"
grep -q "shrank from 50331648 to 41943040" /tmp/rsz.log || { cat /tmp/rsz.log; fail "the log does not say the device shrank"; }
check 0
check $((32 * MiB - 4096))
put $((40 * MiB - 4096))
check $((40 * MiB - 4096))
kill $dog 2>/dev/null || true
del_dev "$dev"
result rsz 40
ok "rbd/rsz shrunk to 40 MiB: $dev followed in $shrunk s, nothing readable past the end, the log says so"
dd if=/tmp/results of=/dev/vda conv=notrunc 2>/dev/null || fail "cannot write the results to /dev/vda"
