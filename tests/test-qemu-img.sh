#!/usr/bin/env bash
# qemu-img convert a sparse qcow2 and a raw image into the server over a
# dirty disk (holes must become zeroes), qemu-img compare, qemu-img info.
source "${srcdir:-.}/functions.sh"
requires_prog qemu-img
requires_prog qemu-io
make_tmpdir
export tmp

# 24 MiB source: random data in a few places, holes elsewhere.
truncate -s 24M "$tmp/src.raw"
for mib in 0 5 11 23; do
  head -c 786432 /dev/urandom |
    dd of="$tmp/src.raw" bs=64K seek=$((mib*16 + 1)) conv=notrunc status=none
done
qemu-img convert -f raw -O qcow2 "$tmp/src.raw" "$tmp/src.qcow2"

# Fill the disk with 0xff so that unwritten holes would show, then convert.
$UBDKIT serve -U - --run '
    set -e
    qemu-io -f raw -c "write -q -P 0xff 0 24M" "$uri"
    qemu-img info --output=json "$uri" > "$tmp/info.json"
    qemu-img convert -n -f qcow2 -O raw "$tmp/src.qcow2" "$uri"
    qemu-img compare -f qcow2 -F raw "$tmp/src.qcow2" "$uri"
    qemu-img convert -n -f raw -O raw "$tmp/src.raw" "$uri"
    qemu-img compare -f raw -F raw "$tmp/src.raw" "$uri"
    qemu-img convert -f raw -O raw "$uri" "$tmp/back.raw"
  ' memory size=24M || fail "qemu-img convert/compare against memory backend failed"
cmp "$tmp/src.raw" "$tmp/back.raw" || fail "image read back with qemu-img differs"

"$PYTHON" -c 'import json, sys
i = json.load(open(sys.argv[1]))
sys.exit(0 if i["virtual-size"] == 24 << 20 else 1)' "$tmp/info.json" ||
  fail "qemu-img info: virtual-size is not 24 MiB: $(cat "$tmp/info.json")"

# Same into a file backend; the backing file must equal the source.
truncate -s 24M "$tmp/disk.img"
$UBDKIT serve -U - --run '
    qemu-img convert -n -f qcow2 -O raw "$tmp/src.qcow2" "$uri" &&
    qemu-img compare -f qcow2 -F raw "$tmp/src.qcow2" "$uri"
  ' file file="$tmp/disk.img" || fail "qemu-img convert/compare against file backend failed"
cmp "$tmp/src.raw" "$tmp/disk.img" || fail "file backend: backing file differs from source"
