# ublk devices over the rbd backend, the Ceph cluster on the host, reached
# over the guest's network (tests/test-vm-rbd.sh, which checks the results
# against `rbd export` once the guest is gone).  The results go to the
# virtio disk /dev/vda as lines "WHAT MD5" and "WHAT MD5 FILE".
. "$VMLIB"
conf=/etc/ceph/vm.conf
: > /tmp/results
# Appended to by every script; each writes the whole file to /dev/vda.
result () { echo "$*" >> /tmp/results; }
dev_md5 () { dd if="$1" bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }

# --- rbd/fs: every thread of the server (librados' and librbd's included)
# an IO_FLUSHER while I/O runs, memory locked, oom_score_adj -1000.
t0=$(uptime_s)
add_dev dev rbd pool=rbd image=fs conf=$conf
ok "ubdkit add rbd pool=rbd image=fs: $dev in $(since "$t0") s"
pid=$(server_pid "$dev")
[ -n "$pid" ] || fail "no server pid for $dev"
: > /tmp/threads.seen
t0=$(uptime_s)
(dd if=/dev/urandom of="$dev" bs=64k count=160 oflag=direct 2>/dev/null &&
 dd if="$dev" of=/dev/null bs=64k count=160 iflag=direct 2>/dev/null) &
io=$!
i=0
while [ $i -lt 10 ]; do
  check_flusher "$pid" set "rbd add"
  i=$((i + 1))
  sleep 0.2
done
wait $io || fail "I/O on $dev failed"
check_flusher "$pid" set "rbd add"
ok "every thread an IO_FLUSHER while 10 MiB went each way in $(since "$t0") s: $(sort /tmp/threads.seen | uniq -c | awk '{printf "%s%s x%s", s, $2, $1; s=", "}')"
ntask=$(ls /proc/$pid/task | wc -l)
[ "$(cat /proc/$pid/oom_score_adj)" = -1000 ] ||
  fail "oom_score_adj $(cat /proc/$pid/oom_score_adj), not -1000"
check_locked "$pid" "rbd add"
ok "$ntask threads; oom_score_adj -1000; $LOCK_INFO"

# ext4: files with checksums, fsck clean, remount and verify.
t0=$(uptime_s)
fs_roundtrip "$dev"
while read -r sum file; do result fs "$sum" "$file"; done < /tmp/sums
sum=$(dev_md5 "$dev")
result fs "$sum"
ok "ext4 on $dev: mkfs, 4 files, fsck clean, remount, checksums ($(since "$t0") s)"
del_dev "$dev"
ok "del $dev"

# --- rbd/raw: a known pattern at known offsets, read back.
# pattern OFF LEN: the bytes written at OFF (tests/test-vm-rbd.sh makes the
# same).
pattern () { yes "ubdkit rbd block at $1" | head -c "$2"; }
regions="0:4096 1049088:512 5242880:65536 16773120:4096"
add_dev dev rbd pool=rbd image=raw conf=$conf
[ "$(/usr/sbin/blockdev --getsize64 "$dev")" = "$RAW_SIZE" ] ||
  fail "$dev: size $(/usr/sbin/blockdev --getsize64 "$dev"), not $RAW_SIZE"
[ "$(dev_md5 "$dev")" = "$SNAP_MD5" ] || fail "$dev: rbd/raw does not read as imported"
for r in $regions; do
  off=${r%:*} len=${r#*:}
  pattern "$off" "$len" > /tmp/pat
  dd if=/tmp/pat of="$dev" bs=512 seek=$((off / 512)) oflag=direct conv=notrunc 2>/dev/null ||
    fail "write of $len bytes at $off to $dev"
done
for r in $regions; do
  off=${r%:*} len=${r#*:}
  pattern "$off" "$len" > /tmp/pat
  dd if="$dev" bs=512 skip=$((off / 512)) count=$((len / 512)) iflag=direct 2>/dev/null |
    cmp -s - /tmp/pat || fail "$len bytes at $off of $dev do not read back"
done
raw=$(dev_md5 "$dev")
result raw "$raw"
del_dev "$dev"
ok "rbd/raw: patterns written at $regions, read back"

# --- Read-only: the snapshot taken on the host before the guest started,
# and the head opened readonly=true.  Writes refused, contents as at the
# snapshot and as just written.
# check_ro DEV MD5 WHAT
check_ro () {
  [ "$(/usr/sbin/blockdev --getro "$1")" = 1 ] || fail "$3: $1 is not read-only"
  ! dd if=/dev/zero of="$1" bs=4096 count=1 oflag=direct 2>/dev/null ||
    fail "$3: a write to $1 succeeded"
  [ "$(dev_md5 "$1")" = "$2" ] || fail "$3: $1 does not read as expected"
}
add_dev dev rbd pool=rbd image=raw snapshot=s1 conf=$conf
check_ro "$dev" "$SNAP_MD5" "snapshot=s1"
del_dev "$dev"
ok "rbd/raw@s1: read-only, reads as at the snapshot"
# With --io-flusher=off, so that the check above can fail: every thread,
# Ceph's too, then has the flags clear.
add_dev dev --io-flusher=off rbd pool=rbd image=raw readonly=true conf=$conf
check_ro "$dev" "$raw" "readonly=true"
check_flusher "$(server_pid "$dev")" clear "rbd add --io-flusher=off"
del_dev "$dev"
ok "rbd/raw readonly=true: read-only, reads as written; with --io-flusher=off every thread has the flags clear"

dd if=/tmp/results of=/dev/vda conv=notrunc 2>/dev/null || fail "cannot write the results to /dev/vda"
sync
