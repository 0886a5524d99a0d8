#!/usr/bin/env bash
# VM disks.  qemu-system uses `ubdkit serve` as its guest's virtio disks
# (-drive file=nbd+unix:///?socket=...,format=raw,if=virtio): vda is a file
# served directly, vdb the same through the nbd backend (ubdkit in front of
# another ubdkit).  The guest makes ext4 on both and writes a file; after
# the guest is gone the host reads each disk back through ubdkit (nbdcopy),
# checks it with e2fsck and compares the file with what it must hold.  In
# the same boot, a ublk device from `ubdkit add` is used through qemu's
# block layer as a raw disk (qemu-io), and `ubdkit add nbd` is tested.
source "${srcdir:-.}/functions.sh"
requires_prog qemu-system-x86_64
requires_prog qemu-io
requires_prog nbdcopy
requires_prog debugfs
$UBDKIT --help 2>&1 | grep -q '^  nbd ' || skip "built without libnbd"
make_tmpdir
vm="$srcdir/vm"

truncate -s 256M "$tmp/a.img" "$tmp/b.img"
start_server asock apid file file="$tmp/a.img"
start_server rsock rpid file file="$tmp/b.img"
start_server bsock bpid nbd uri="nbd+unix:///?socket=$rsock"

st=0
"$vm/vm-run" --timeout 600 --carry qemu-io --carry "$vm/lib.sh=/vmlib.sh" \
  --env VMLIB=/vmlib.sh \
  --disk "nbd+unix:///?socket=$asock" --disk "nbd+unix:///?socket=$bsock" \
  "$vm/disk-virtio.sh" "$vm/disk-ublk.sh" || st=$?
[ $st = 0 ] || exit $st

awk 'BEGIN { for (i = 0; i < 200000; i++) printf "%07d ubdkit virtio disk\n", i }' \
  > "$tmp/want"
for s in "$asock" "$bsock"; do
  rm -f "$tmp/copy.img" "$tmp/big"
  nbdcopy "nbd+unix:///?socket=$s" "$tmp/copy.img"
  e2fsck -fn "$tmp/copy.img" > "$tmp/fsck.out" 2>&1 ||
    { cat "$tmp/fsck.out"; fail "e2fsck of the disk read through $s"; }
  debugfs -R "dump /big $tmp/big" "$tmp/copy.img" 2>/dev/null
  cmp "$tmp/want" "$tmp/big" || fail "/big read through $s is not what the guest wrote"
done
cmp "$tmp/b.img" "$tmp/copy.img" || fail "the proxied disk differs from its remote's file"
kill -0 $bpid || fail "the proxy died"
