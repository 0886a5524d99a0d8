# Crash recovery under memory pressure: as ublk-recovery.sh (fio verify on
# a mounted ext4 while the server is SIGKILLed three times), but in a small
# VM where a memory hog of more than the free memory runs in a loop the
# whole time, with swap on a raw virtio disk (/dev/vdb, not on the device
# under test).  fio writes through the page cache, so dirty pages of the
# ublk device wait on the dead server while reclaim runs, and each new
# server has to fault in and lock its memory with memory full.  Recovery
# must still complete every time: fio ends with no error, the data
# verifies, fsck is clean.  Prints "TIME recovery N: X s" per kill (kill
# to the device live again with the new server).
. "$VMLIB"
no_other_swap
[ -b /dev/vda ] && [ -b /dev/vdb ] || fail "need /dev/vda (data) and /dev/vdb (swap)"
mkswap /dev/vdb >/dev/null && swapon /dev/vdb || fail "swap on /dev/vdb"
add_dev dev -q 2 $PROT file file=/dev/vda
mkfs.ext4 -q -F "$dev" && mkdir -p /mnt/rec && mount "$dev" /mnt/rec ||
  fail "ext4 on $dev"

# state_pid DEV: "STATE PID" of DEV from `ubdkit list --json`.
state_pid () {
  "$UBDKIT" list --json | tr ',' '\n' | awk -v d="\"$1\"" '
    /"device":/ { cur = $2 } /"state":/ { if (cur == d) s = $2 }
    /"pid":/ { if (cur == d) p = $2 } END { gsub(/"/, "", s); print s, p }'
}

# The hog: more than what is available, in a loop until told to stop, so
# that reclaim and swap run for the whole test.
hog=$(( $(meminfo_mb MemAvailable) * 5 / 4 ))
echo "  memory before the hog: MemAvailable $(meminfo_mb MemAvailable) MiB; hog $hog MiB"
rm -f /tmp/hog.stop /tmp/hog.fail
( n=0
  while [ ! -e /tmp/hog.stop ]; do
    n=$((n + 1))
    st=0; memhog "$hog" 1 > /tmp/hog.$n.out 2>&1 || st=$?
    # 137: OOM-killed, acceptable (pressure is the point); 1: a mismatch.
    [ $st = 0 ] || [ $st = 137 ] || { cp /tmp/hog.$n.out /tmp/hog.fail; break; }
    echo $n > /tmp/hog.rounds
  done ) &
hogloop=$!
# Wait until the hog has pushed memory out to swap.
for i in $(seq 1 600); do
  [ "$(meminfo_mb SwapFree)" -lt "$(( $(meminfo_mb SwapTotal) - 16 ))" ] && break
  sleep 0.1
done
swap_report

# fio in a loop until the kills are done, so that one is always running
# whatever the guest's speed; each run must verify.
rm -f /tmp/kills.done /tmp/fio.fail /tmp/fio.runs
( n=0
  while [ ! -e /tmp/kills.done ] || [ $n = 0 ]; do
    n=$((n + 1))
    fio --name=rec --directory=/mnt/rec --size=48M --rw=randwrite --bs=4k \
        --ioengine=psync --direct=0 --fsync=64 --end_fsync=1 --verify=crc32c \
        --do_verify=1 --verify_fatal=1 --output=/tmp/rec.out >/dev/null 2>&1 &&
      grep -q "err= 0" /tmp/rec.out || { cp /tmp/rec.out /tmp/fio.fail; break; }
    echo $n > /tmp/fio.runs
  done ) &
fio=$!
vmstat_n () { awk -v f="$1" '$1 == f { print $2 }' /proc/vmstat; }
swapped0=$(vmstat_n pswpout)
for round in 1 2 3; do
  sleep 2
  [ ! -e /tmp/fio.fail ] || { cat /tmp/fio.fail; fail "fio failed before kill $round"; }
  old=$(server_pid "$dev")
  [ -n "$old" ] && [ "$old" != 0 ] || fail "no server pid for $dev (round $round)"
  at_kill="MemFree $(meminfo_mb MemFree) MiB, swap used $(( $(meminfo_mb SwapTotal) - $(meminfo_mb SwapFree) )) MiB"
  t0=$(uptime_s)
  kill -9 "$old"
  new=$old; state=
  # Up to 120 s: the device is live again, served by a new server.
  for i in $(seq 1 1200); do
    set -- $(state_pid "$dev")
    state=$1; new=$2
    [ "$state" = live ] && [ -n "$new" ] && [ "$new" != "$old" ] && [ "$new" != 0 ] && break
    sleep 0.1
  done
  [ "$state" = live ] && [ "$new" != "$old" ] ||
    { swap_report; fail "device not recovered 120 s after kill $round (state $state, pid $new)"; }
  echo "TIME recovery $round: $(since "$t0") s (server $old killed, $new serving; at the kill: $at_kill)"
done
touch /tmp/kills.done
wait $fio || true
[ ! -e /tmp/fio.fail ] || { cat /tmp/fio.fail; fail "fio failed across server crashes"; }
swapped=$(( $(vmstat_n pswpout) - swapped0 ))
[ "$swapped" -gt 0 ] || fail "no page was swapped out while fio ran: no memory pressure"
ok "fio verify on ext4 (buffered) survived 3 server kills under memory pressure ($(cat /tmp/fio.runs) runs, $swapped pages swapped out meanwhile)"
touch /tmp/hog.stop
wait $hogloop || true
[ ! -e /tmp/hog.fail ] || { cat /tmp/hog.fail; fail "memhog saw corrupted memory"; }
[ -s /tmp/hog.rounds ] || fail "the memory hog never completed a round"
ok "memory hog ran $(cat /tmp/hog.rounds) rounds of $hog MiB alongside"
umount /mnt/rec
e2fsck -f -n "$dev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck after crashes"; }
ok "fsck clean after crashes under memory pressure"
del_dev "$dev"
swapoff /dev/vdb
dmesg | grep -q "I/O error" && fail "the kernel saw I/O errors"
ok "no I/O error reached the kernel"
