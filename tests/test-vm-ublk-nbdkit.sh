#!/bin/bash
# ublk devices over nbdkit plugins against the real kernel: ext4 on
# nbdkit:memory (mkfs, files, fsck, remount, checksums, del) and
# nbdkit:pattern read back whole and word by word; the test plugin
# tests/nbdkit-peer-plugin.so gets cleanup and unload when the server exits;
# the offset filter under a device, kept across an upgrade; ext4 through
# the partition filter (partition 2 of an MBR disk) and the luks filter (a
# qemu-img LUKS image), both virtio disks made here and checked here once
# the guest is gone: only partition 2 changed and holds what the guest read
# and wrote, fsck clean; the LUKS image decrypts with qemu-img to what the
# guest read, and its payload does not hold the plaintext.  Inner scripts:
# tests/vm/ublk-nbdkit.sh, tests/vm/ublk-filter.sh, tests/vm/ublk-filter-fs.sh.
# The plugins and filters are dlopened, so ldd of ubdkit does not list them:
# they are carried (with their libraries) at the path the daemon was built
# to look in.
source "${srcdir:-.}/functions.sh"
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
plugindir=$("$UBDKIT" --help | sed -n 's|^ *\(/.*\)/nbdkit-memory-plugin.so)$|\1|p')
[ -n "$plugindir" ] || fail "cannot find the plugin directory in 'ubdkit --help'"
for p in memory pattern; do
  [ -f "$plugindir/nbdkit-$p-plugin.so" ] ||
    skip "$plugindir/nbdkit-$p-plugin.so is not installed (package nbdkit)"
done

# The pattern plugin's content, computed here: each 8-byte word is its own
# offset, big-endian.  The guest compares its read-back against this sum.
size=$((16 * 1024 * 1024))
sum=$("$PYTHON" -c '
import hashlib, struct, sys
n = int(sys.argv[1]); h = hashlib.md5()
for base in range(0, n, 1 << 20):
    h.update(b"".join(struct.pack(">Q", o) for o in range(base, base + (1 << 20), 8)))
print(h.hexdigest())' $size)

# Images for tests/vm/ublk-filter-fs.sh, virtio disks in the guest: an MBR
# disk with two partitions (nbdkit's partitioning plugin: 1 MiB of random
# bytes, then 32 MiB), a LUKS image (qemu-img) and a page for its results.
requires_prog nbdkit
requires_prog nbdcopy
requires_prog qemu-img
requires_prog debugfs
requires_prog e2fsck
filterdir=$(pkg-config --variable=filterdir nbdkit)
for f in offset partition luks; do
  [ -f "$filterdir/nbdkit-$f-filter.so" ] ||
    skip "$filterdir/nbdkit-$f-filter.so is not installed (package nbdkit)"
done
make_tmpdir
head -c 1M /dev/urandom > "$tmp/p1.img"
truncate -s 32M "$tmp/p2.img"
nbdkit -U - partitioning "$tmp/p1.img" "$tmp/p2.img" partition-type=mbr \
  --run "nbdcopy \"\$uri\" '$tmp/disk.img'" || fail "cannot make the partitioned image"
# Partition 2's start and length in sectors, from the table's second entry.
read -r p2lba p2len < <(od -An -t u4 -j $((446 + 16 + 8)) -N 8 "$tmp/disk.img")
p2start=$((p2lba * 512)) p2size=$((p2len * 512))
[ "$p2size" = $((32 << 20)) ] || fail "partition 2 of the image is $p2size bytes"
# region FILE START LENGTH: those bytes of FILE.
region () { dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=1M 2>/dev/null; }
region "$tmp/disk.img" 0 "$p2start" > "$tmp/head.before"
tail -c +$((p2start + p2size + 1)) "$tmp/disk.img" > "$tmp/tail.before"
pass=ubdkit-$RANDOM-$RANDOM
luks_size=$((32 << 20))
# iter-time=10 (ms of the host's PBKDF2): the guest's emulated CPU then
# unlocks in a second, not a minute.  qemu times a first round of 2^15
# iterations to choose the count and gives up when that takes 0 ms, "Unable
# to get accurate CPU usage" (a qemu bug on fast machines): try again.
for i in 1 2 3 4 5; do
  qemu-img create -q -f luks --object secret,id=sec0,data="$pass" \
    -o key-secret=sec0,iter-time=10 "$tmp/luks.img" $luks_size 2>"$tmp/qemu-img.err" && break
  grep -q 'accurate CPU usage' "$tmp/qemu-img.err" && [ $i -lt 5 ] ||
    { cat "$tmp/qemu-img.err"; fail "qemu-img create -f luks"; }
done
truncate -s 64K "$tmp/results.img"

vm="$srcdir/vm"
st=0
"$vm/vm-run" --timeout 600 --carry "$vm/lib.sh=/vmlib.sh" \
  --carry "$plugindir/nbdkit-memory-plugin.so" \
  --carry "$plugindir/nbdkit-pattern-plugin.so" \
  --carry "$builddir/nbdkit-peer-plugin.so=/peer-plugin.so" \
  --carry "$filterdir/nbdkit-offset-filter.so" \
  --carry "$filterdir/nbdkit-partition-filter.so" \
  --carry "$filterdir/nbdkit-luks-filter.so" \
  --disk "$tmp/disk.img" --disk "$tmp/luks.img" --disk "$tmp/results.img" \
  --env VMLIB=/vmlib.sh --env PATTERN_SIZE=$size --env PATTERN_MD5=$sum \
  --env P2_START=$p2start --env P2_SIZE=$p2size \
  --env LUKS_PASS="$pass" --env LUKS_SIZE=$luks_size \
  "$vm/ublk-nbdkit.sh" "$vm/ublk-filter.sh" "$vm/ublk-filter-fs.sh" || st=$?
[ $st = 0 ] || exit $st

# What the guest read through ublk, and the files it wrote: "WHAT MD5" and
# "WHAT MD5  FILE" lines.
tr -d '\0' < "$tmp/results.img" > "$tmp/results"
want () { awk -v w="$1" '$1 == w && NF == 2 { print $2 }' "$tmp/results"; }
[ -n "$(want p2)" ] && [ -n "$(want luks)" ] || { cat "$tmp/results"; fail "no results from the guest"; }
# check_fs IMAGE WHAT: IMAGE is what the guest read, fsck clean, its files
# as the guest wrote them.
check_fs () {
  local img=$1 what=$2 sum file
  [ "$(md5sum < "$img" | cut -d' ' -f1)" = "$(want "$what")" ] ||
    fail "$what: the image's bytes are not what the guest read through ublk"
  e2fsck -f -n "$img" > "$tmp/fsck.out" 2>&1 || { cat "$tmp/fsck.out"; fail "$what: e2fsck on the host"; }
  awk -v w="$what" '$1 == w && NF == 3 { print $2, $3 }' "$tmp/results" > "$tmp/files"
  [ "$(wc -l < "$tmp/files")" = 4 ] || { cat "$tmp/results"; fail "$what: not 4 files in the results"; }
  while read -r sum file; do
    rm -f "$tmp/dump"
    debugfs -R "dump /$file $tmp/dump" "$img" 2>/dev/null
    [ "$(md5sum < "$tmp/dump" | cut -d' ' -f1)" = "$sum" ] || fail "$what: /$file differs"
  done < "$tmp/files"
}

# Partition 2 only: the rest of the disk as it was.
region "$tmp/disk.img" 0 "$p2start" | cmp -s - "$tmp/head.before" ||
  fail "the table or partition 1 changed: a write landed outside partition 2"
tail -c +$((p2start + p2size + 1)) "$tmp/disk.img" | cmp -s - "$tmp/tail.before" ||
  fail "the disk after partition 2 changed"
region "$tmp/disk.img" "$p2start" "$p2size" > "$tmp/p2.out"
check_fs "$tmp/p2.out" p2
echo "$0: partition 2 holds what the guest wrote, fsck clean; the table and partition 1 unchanged"

# LUKS: qemu's own decryption reads what the guest read; the plaintext is
# nowhere in the image itself.
qemu-img convert --object secret,id=sec0,data="$pass" \
  --image-opts "driver=luks,key-secret=sec0,file.filename=$tmp/luks.img" \
  -O raw "$tmp/luks.out" || fail "qemu-img cannot decrypt the image"
check_fs "$tmp/luks.out" luks
grep -q 'ubdkit luks plaintext' "$tmp/luks.out" || fail "the plaintext is not in the decrypted image"
grep -q 'ubdkit luks plaintext' "$tmp/luks.img" && fail "the plaintext is in the LUKS image unencrypted"
echo "$0: the LUKS image decrypts (qemu-img) to what the guest read; its payload is encrypted"
