#!/bin/bash
# ublk devices over nbdkit plugins against the real kernel: ext4 on
# nbdkit:memory (mkfs, files, fsck, remount, checksums, del) and
# nbdkit:pattern read back whole and word by word; the test plugin
# tests/nbdkit-peer-plugin.so gets cleanup and unload when the server exits;
# and the offset filter under a device, kept across an upgrade.  Inner scripts:
# tests/vm/ublk-nbdkit.sh, tests/vm/ublk-filter.sh.  The plugins are dlopened, so ldd of ubdkit does
# not list them: they are carried (with their libraries) at the path the
# daemon was built to look in.
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

vm="$srcdir/vm"
exec "$vm/vm-run" --timeout 600 --carry "$vm/lib.sh=/vmlib.sh" \
  --carry "$plugindir/nbdkit-memory-plugin.so" \
  --carry "$plugindir/nbdkit-pattern-plugin.so" \
  --carry "$builddir/nbdkit-peer-plugin.so=/peer-plugin.so" \
  --carry "$(pkg-config --variable=filterdir nbdkit)/nbdkit-offset-filter.so" \
  --env VMLIB=/vmlib.sh --env PATTERN_SIZE=$size --env PATTERN_MD5=$sum \
  "$vm/ublk-nbdkit.sh" "$vm/ublk-filter.sh"
