# The OSD killed (SIGKILL) and started again while the guest writes to a
# ublk device over rbd/rst: writes wait while it is down, resume after, and
# every acknowledged write reads back.  The host (tests/ceph/ctl.py)
# does the killing when the guest asks, over the network: a line
# "kill-osd" to $CTL_ADDR:$CTL_PORT, answered "up" once the OSD is back;
# tests/test-vm-rbd.sh checks rbd/rst on the host afterwards.
. "$VMLIB"
conf=/etc/ceph/vm.conf
result () { echo "$*" >> /tmp/results; }
block () { yes "ubdkit rbd restart block $1" | head -c 4096; }

add_dev dev rbd pool=rbd image=rst conf=$conf
nblocks=$(($(/usr/sbin/blockdev --getsize64 "$dev") / 4096))

# The writer: block i holds its number; each write is direct and then
# fsync'd (a flush through ublk to rbd_aio_flush), and once dd has
# returned it is acknowledged: "I SECS" appended to /tmp/acked.
: > /tmp/acked
rm -f /tmp/stop
(i=0
 while [ ! -e /tmp/stop ] && [ $i -lt $nblocks ]; do
   t=$(uptime_s)
   block $i | dd of="$dev" bs=4096 seek=$i oflag=direct conv=notrunc,fsync 2>/dev/null ||
     { echo "write of block $i failed"; exit 1; }
   echo "$i $(since "$t")" >> /tmp/acked
   i=$((i + 1))
 done) &
wpid=$!
acked () { wc -l < /tmp/acked; }
# wait_acked N SECS: until N writes are acknowledged.
wait_acked () {
  _t=$(uptime_s)
  while [ "$(acked)" -lt "$1" ]; do
    kill -0 $wpid 2>/dev/null || fail "the writer stopped after $(acked) writes"
    [ "$(since "$_t" | cut -d. -f1)" -lt "$2" ] || fail "$(acked) writes acknowledged, not $1, after $2 s"
    sleep 0.2
  done
}

wait_acked 20 60
n0=$(acked)
t0=$(uptime_s)
reply=$(echo kill-osd | nc -w 90 "$CTL_ADDR" "$CTL_PORT") || true
[ "$reply" = up ] || fail "the host did not restart the OSD: '$reply'"
n1=$(acked)
down=$(since "$t0")
ok "OSD killed and started again by the host in $down s; writes acknowledged meanwhile: $((n1 - n0))"
t1=$(uptime_s)
wait_acked $((n1 + 20)) 120
ok "I/O resumed: 20 more writes in $(since "$t1") s"
touch /tmp/stop
wait $wpid || fail "the writer failed"
n=$(acked)
slow=$(sort -k2 -n /tmp/acked | tail -1)
# A write must have waited for the OSD, or the outage missed the I/O.
[ "$(echo "${slow#* }" | cut -d. -f1)" -ge 2 ] ||
  fail "no write took 2 s or more (the slowest: ${slow#* } s): the OSD's outage did not hold up the I/O"

# Every acknowledged block, read back through the device.
while read -r i secs; do
  block "$i" > /tmp/want
  dd if="$dev" bs=4096 skip="$i" count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/want ||
    fail "acknowledged block $i does not read back"
done < /tmp/acked
del_dev "$dev"
result rst "$n"
ok "$n writes acknowledged, every one read back; the slowest, block ${slow% *}, took ${slow#* } s"
dd if=/tmp/results of=/dev/vda conv=notrunc 2>/dev/null || fail "cannot write the results to /dev/vda"
sync
