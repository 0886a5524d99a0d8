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
# --io-flusher=off every thread's flags clear.  Here, once the guest is
# gone: `rbd export` of each image equals what the guest read, e2fsck clean
# and the guest's files in it; rbd/raw is the imported data with the
# patterns over it, its snapshot unchanged.  (An OSD killed and restarted
# under a ublk device in the guest is not here yet: the daemon's side of
# it is tests/test-rbd-restart.sh, on the host.)
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
snap_md5=$(md5sum < "$tmp/raw.src" | cut -d' ' -f1)

# The guest's client configuration: the monitor, no auth, its log and
# admin socket under /tmp, and a start that gives up in 60 s, not 300.
cat > "$tmp/vm.conf" <<EOC
[global]
mon host = $monhost
auth cluster required = none
auth service required = none
auth client required = none
ms bind ipv6 = false
client mount timeout = 60
log file = /tmp/ceph-client.log
log to stderr = false
err to stderr = false
admin socket = /tmp/ceph-client.asok
run dir = /tmp
EOC

# Ceph's client libraries, dlopened by the daemon (plugins/rbd/lib.c).
libs=()
for so in librados.so.2 librbd.so.1; do
  p=$(/sbin/ldconfig -p | awk -v s="$so" '$1 == s && /x86-64/ { print $NF; exit }')
  [ -n "$p" ] || skip "$so is not installed (Debian: librados2 librbd1)"
  libs+=(--carry "$p")
done

truncate -s 64K "$tmp/results.img"
st=0
"$vm/vm-run" --net --mem 1536 --timeout 420 --carry "$vm/lib.sh=/vmlib.sh" \
  --carry "$tmp/vm.conf=/etc/ceph/vm.conf" "${libs[@]}" \
  --disk "$tmp/results.img" \
  --env VMLIB=/vmlib.sh --env UBDKIT_SANITIZED="${UBDKIT_SANITIZED:-no}" \
  --env RAW_SIZE=$raw_size --env SNAP_MD5="$snap_md5" \
  "$vm/rbd-ublk.sh" || st=$?
[ $st = 0 ] || exit $st

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
