#!/bin/bash
# In a VM: ublk devices over the rbd backend.  The Ceph cluster
# (tests/ceph/cluster.sh, memstore) runs on the host; the guest reaches it
# over qemu's user networking (vm-run --net).  Ceph's maps carry the
# addresses the daemons bound, so the cluster binds one that the host's
# tools and the guest both dial: the test runs itself again in a private
# network namespace (unshare -n) holding 10.99.0.1, starts the cluster
# there and boots the guest there too, so the guest's connections to
# 10.99.0.1 become qemu's sockets in that namespace, and nothing leaves it.
# In the guest (tests/vm/rbd-ublk.sh): ext4 on rbd/fs, every thread of the
# server an IO_FLUSHER under I/O, memory locked, oom_score_adj -1000; a
# pattern at known offsets of rbd/raw; its snapshot, and the head with
# readonly=true, read-only with the expected contents, and with
# --io-flusher=off every thread's flags clear.  Then the guest asks the
# host, over the network (tests/ceph/ctl.py), for what only the host can
# do: rbd/rsz resized under a ublk device (tests/vm/rbd-resize.sh), which
# follows it with UPDATE_SIZE, growing and shrinking, where the kernel has
# it; and the OSD killed (SIGKILL) and started again while the guest keeps
# writing to rbd/rst, direct and fsync'd (tests/vm/rbd-restart.sh): writes
# wait, resume, and every acknowledged one reads back.  Last, memory
# pressure on ext4 over rbd/mp (tests/vm/rbd-pressure.sh): dirty writeback
# from a cgroup with memory.max=16M, and the guest out of memory (a hog of
# RAM + 256 MiB, no swap) while files are written and fsync'd: the OOM
# killer takes only the hog, the server serves on.  The cluster is
# bluestore, so the objects survive the restart.  Here, once the guest is
# gone: `rbd export` of each image equals what the guest read, e2fsck clean
# and the guest's files in it; rbd/raw is the imported data with the
# patterns over it, its snapshot unchanged; rbd/rsz has the size the guest
# last asked for and its blocks; every block of rbd/rst the guest had
# acknowledged holds what it wrote; rbd/mp is fsck-clean with the files
# written under pressure.
# librados and librbd are dlopened, so ldd of ubdkit does not list them:
# they are carried (with their libraries), with a ceph.conf for the guest.
source "${srcdir:-.}/functions.sh"
source "$srcdir/ceph/functions.sh"
requires_ceph
requires_prog unshare
requires_prog ip
requires_prog debugfs
requires_prog e2fsck
vm="$srcdir/vm"
addr=10.99.0.1

if [ -z "${UBDKIT_VM_RBD_NETNS:-}" ]; then
  requires_root
  unshare -n true 2>/dev/null || skip "cannot make a network namespace (unshare -n)"
  # The kernel now, while the network is there: the namespace has none.
  st=0
  "$vm/vm-run" --prepare || st=$?
  [ $st = 0 ] || exit $st
  exec unshare -n env UBDKIT_VM_RBD_NETNS=1 bash "$0" "$@"
fi

# In the namespace: lo up, with the cluster's address.  (On lo rather than
# on a dummy interface: the host's kernel may lack the dummy driver, and
# for sockets of this namespace the two are the same.)
ip link set lo up || fail "ip link set lo up"
ip addr add "$addr/32" dev lo || fail "ip addr add $addr/32 dev lo"
make_tmpdir
t0=$(date +%s.%N)
start_ceph --addr "$addr" --store bluestore
echo "$0: cluster up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s: $(cat "$tmp/ceph/timings")"
monhost=$(sed -n 's/^mon host = //p' "$CEPH_CONF")
case $monhost in "[v2:$addr:"*) ;; *) fail "the cluster's mon host is '$monhost'" ;; esac

# The images: rbd/fs for ext4; rbd/raw, random data imported, and its
# snapshot s1 taken before the guest starts.
MiB=$((1024 * 1024))
raw_size=$((16 * MiB))
rbd create --size 64M rbd/fs || fail "rbd create rbd/fs"
head -c $raw_size /dev/urandom > "$tmp/raw.src"
rbd import --no-progress "$tmp/raw.src" rbd/raw >/dev/null || fail "rbd import rbd/raw"
rbd snap create rbd/raw@s1 >/dev/null 2>&1 || fail "rbd snap create rbd/raw@s1"
rbd create --size 32M rbd/rsz || fail "rbd create rbd/rsz"
rbd create --size 64M rbd/rst || fail "rbd create rbd/rst"
rbd create --size 256M rbd/mp || fail "rbd create rbd/mp"
snap_md5=$(md5sum < "$tmp/raw.src" | cut -d' ' -f1)

# The guest's client configuration (the monitor, no auth, its log and
# admin socket under /tmp).
ceph_cluster guest-conf > "$tmp/vm.conf" || fail "cluster.sh guest-conf"

# Ceph's client libraries, dlopened by the daemon (plugins/rbd/lib.c).
libs=()
for so in librados.so.2 librbd.so.1; do
  p=$(/sbin/ldconfig -p | awk -v s="$so" '$1 == s && /x86-64/ { print $NF; exit }')
  [ -n "$p" ] || skip "$so is not installed (Debian: librados2 librbd1)"
  libs+=(--carry "$p")
done

# The host's side of the guest's requests.
"$PYTHON" "$srcdir/ceph/ctl.py" "$addr" "$srcdir/ceph/cluster.sh" "$tmp/ceph" \
  "$tmp/ctl.port" "$tmp/ctl.log" &
ctl=$!
cleanup_fn "kill $ctl 2>/dev/null; wait $ctl 2>/dev/null"
for (( i=0; i<50; i++ )); do [ -s "$tmp/ctl.port" ] && break; sleep 0.1; done
[ -s "$tmp/ctl.port" ] || fail "tests/ceph/ctl.py did not start"

memhog="${builddir:-.}/memhog"
[ -x "$memhog" ] || fail "$memhog not built (make check builds it)"

truncate -s 64K "$tmp/results.img"
st=0
"$vm/vm-run" --net --mem 1536 --timeout 600 --carry "$vm/lib.sh=/vmlib.sh" \
  --carry "$memhog=/ubdkit/memhog" \
  --carry "$tmp/vm.conf=/etc/ceph/vm.conf" "${libs[@]}" \
  --disk "$tmp/results.img" \
  --env VMLIB=/vmlib.sh --env UBDKIT_SANITIZED="${UBDKIT_SANITIZED:-no}" \
  --env RAW_SIZE=$raw_size --env SNAP_MD5="$snap_md5" \
  --env CTL_ADDR=$addr --env CTL_PORT="$(cat "$tmp/ctl.port")" \
  "$vm/rbd-ublk.sh" "$vm/rbd-resize.sh" "$vm/rbd-restart.sh" "$vm/rbd-pressure.sh" || st=$?
[ $st = 0 ] || exit $st
kill -0 $ctl 2>/dev/null || fail "tests/ceph/ctl.py died"
[ -s "$tmp/ctl.log" ] && sed "s|^|$0: host: |" "$tmp/ctl.log"

# What the guest read through ublk, and the files it wrote.
tr -d '\0' < "$tmp/results.img" > "$tmp/results"
want () { awk -v w="$1" '$1 == w && NF == 2 { print $2 }' "$tmp/results"; }
[ -n "$(want fs)" ] && [ -n "$(want raw)" ] || { cat "$tmp/results"; fail "no results from the guest"; }

# rbd/fs: the bytes the guest read, fsck clean, its files.
rbd export --no-progress rbd/fs "$tmp/fs.img" >/dev/null 2>&1 || fail "rbd export rbd/fs"
[ "$(md5sum < "$tmp/fs.img" | cut -d' ' -f1)" = "$(want fs)" ] ||
  fail "rbd export of rbd/fs is not what the guest read through ublk"
e2fsck -f -n "$tmp/fs.img" > "$tmp/fsck.out" 2>&1 || { cat "$tmp/fsck.out"; fail "e2fsck of rbd/fs on the host"; }
awk '$1 == "fs" && NF == 3 { print $2, $3 }' "$tmp/results" > "$tmp/files"
[ "$(wc -l < "$tmp/files")" = 4 ] || { cat "$tmp/results"; fail "not 4 files in the results"; }
while read -r sum file; do
  rm -f "$tmp/dump"
  debugfs -R "dump /$file $tmp/dump" "$tmp/fs.img" 2>/dev/null
  [ "$(md5sum < "$tmp/dump" | cut -d' ' -f1)" = "$sum" ] || fail "rbd/fs: /$file differs from what the guest wrote"
done < "$tmp/files"
echo "$0: rbd export of rbd/fs = what the guest read, e2fsck -fn clean, its 4 files intact"

# rbd/raw: the imported data with the guest's patterns over it (the same
# regions and bytes as tests/vm/rbd-ublk.sh), and the snapshot unchanged.
cp "$tmp/raw.src" "$tmp/raw.want"
for r in 0:4096 1049088:512 5242880:65536 16773120:4096; do
  off=${r%:*} len=${r#*:}
  yes "ubdkit rbd block at $off" | head -c "$len" |
    dd of="$tmp/raw.want" bs=512 seek=$((off / 512)) conv=notrunc 2>/dev/null
done
rbd export --no-progress rbd/raw "$tmp/raw.img" >/dev/null 2>&1 || fail "rbd export rbd/raw"
cmp "$tmp/raw.img" "$tmp/raw.want" || fail "rbd/raw is not the imported data with the guest's patterns"
[ "$(md5sum < "$tmp/raw.img" | cut -d' ' -f1)" = "$(want raw)" ] ||
  fail "rbd export of rbd/raw is not what the guest read"
[ "$(sha_rbd rbd/raw@s1)" = "$(sha_file "$tmp/raw.src")" ] || fail "the snapshot rbd/raw@s1 changed"
echo "$0: rbd/raw = the imported data with the guest's patterns; rbd/raw@s1 unchanged"

# rbd/rsz: the size the guest last asked for (48 MiB where the kernel
# could not follow, else 40 MiB), the blocks it wrote.
rsz=$(want rsz)
[ -n "$rsz" ] || { cat "$tmp/results"; fail "no rbd/rsz result"; }
rbd export --no-progress rbd/rsz "$tmp/rsz.img" >/dev/null 2>&1 || fail "rbd export rbd/rsz"
[ "$(stat -c %s "$tmp/rsz.img")" = $((rsz * MiB)) ] ||
  fail "rbd/rsz is $(stat -c %s "$tmp/rsz.img") bytes, not $rsz MiB"
offs="0 $((32 * MiB - 4096))"
[ "$rsz" = 40 ] && offs="$offs $((40 * MiB - 4096))"
for off in $offs; do
  yes "ubdkit rbd resize block at $off" | head -c 4096 > "$tmp/want"
  dd if="$tmp/rsz.img" bs=4096 skip=$((off / 4096)) count=1 2>/dev/null | cmp -s - "$tmp/want" ||
    fail "rbd/rsz: the block at $off is not what the guest wrote"
done
echo "$0: rbd/rsz: $rsz MiB, the guest's blocks in it"

# rbd/rst: every block the guest had acknowledged holds what it wrote.
n=$(want rst)
[ -n "$n" ] && [ "$n" -gt 40 ] || { cat "$tmp/results"; fail "rbd/rst: '$n' writes acknowledged"; }
rbd export --no-progress rbd/rst "$tmp/rst.img" >/dev/null 2>&1 || fail "rbd export rbd/rst"
"$PYTHON" -c '
import sys
img, n = open(sys.argv[1], "rb"), int(sys.argv[2])
for i in range(n):
    line = b"ubdkit rbd restart block %d\n" % i
    want = (line * (4096 // len(line) + 1))[:4096]
    if img.read(4096) != want:
        sys.exit("block %d is not what the guest wrote" % i)
' "$tmp/rst.img" "$n" || fail "rbd/rst lost an acknowledged write"
echo "$0: rbd/rst: the $n blocks the guest had acknowledged across the OSD restart all hold what it wrote"

# rbd/mp: fsck clean, the files written under memory pressure in it.
rbd export --no-progress rbd/mp "$tmp/mp.img" >/dev/null 2>&1 || fail "rbd export rbd/mp"
e2fsck -f -n "$tmp/mp.img" > "$tmp/fsck.out" 2>&1 || { cat "$tmp/fsck.out"; fail "e2fsck of rbd/mp on the host"; }
awk '$1 == "mp" && NF == 3 { print $2, $3 }' "$tmp/results" > "$tmp/files"
[ "$(wc -l < "$tmp/files")" -ge 3 ] || { cat "$tmp/results"; fail "fewer than 3 rbd/mp files in the results"; }
while read -r sum file; do
  rm -f "$tmp/dump"
  debugfs -R "dump /$file $tmp/dump" "$tmp/mp.img" 2>/dev/null
  [ "$(md5sum < "$tmp/dump" | cut -d' ' -f1)" = "$sum" ] || fail "rbd/mp: /$file differs from what the guest wrote"
done < "$tmp/files"
echo "$0: rbd/mp: e2fsck -fn clean, the $(wc -l < "$tmp/files") files written under memory pressure intact"
