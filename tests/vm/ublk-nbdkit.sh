# ublk devices over nbdkit plugins (tests/test-vm-ublk-nbdkit.sh).
. "$VMLIB"

add_dev dev nbdkit:memory size=256M
fs_roundtrip "$dev"
del_dev "$dev"
ok "ext4 on nbdkit:memory"

# check_words DEV OFFSET: the 4 KiB block at OFFSET holds the pattern
# plugin's words, each its own offset as a big-endian 64-bit number.
check_words () {
  dd if="$1" bs=4096 skip=$(($2 / 4096)) count=1 iflag=direct 2>/dev/null |
    od -An -v -tx1 -w8 |
    awk -v base="$2" '{ h = ""; for (i = 1; i <= NF; i++) h = h $i
        want = sprintf ("%016x", base + (NR - 1) * 8)
        if (h != want) { print "  at " base + (NR - 1) * 8 ": " h ", not " want; bad = 1; exit } }
      END { if (NR != 512) { print "  " NR " words read"; bad = 1 } exit bad }' ||
    fail "pattern words at offset $2 of $1"
}

add_dev dev nbdkit:pattern size="$PATTERN_SIZE"
[ "$(/usr/sbin/blockdev --getsize64 "$dev")" = "$PATTERN_SIZE" ] ||
  fail "$dev: size $(/usr/sbin/blockdev --getsize64 "$dev"), not $PATTERN_SIZE"
[ "$(/usr/sbin/blockdev --getro "$dev")" = 1 ] ||
  fail "$dev: the pattern plugin cannot write, yet the device is writable"
! dd if=/dev/zero of="$dev" bs=4096 count=1 oflag=direct 2>/dev/null ||
  fail "$dev: a write to the read-only pattern device succeeded"
for off in 0 4096 1048576 $((PATTERN_SIZE / 2 + 12288)) $((PATTERN_SIZE - 4096)); do
  check_words "$dev" $off
done
sum=$(dd if="$dev" bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$sum" = "$PATTERN_MD5" ] ||
  fail "$dev: md5 of the whole device $sum, expected $PATTERN_MD5"
del_dev "$dev"
ok "nbdkit:pattern read back ($PATTERN_SIZE bytes, md5 and word by word)"

# A plugin's cleanup and unload run once, in the process that served with
# it, when that server exits (as in nbdkit).  The test plugin writes
# "NAME PID" for each to mark=PATH; its one sector is text starting "pre ".
add_dev dev nbdkit:/peer-plugin.so mark=/tmp/peer-mark
dd if="$dev" bs=512 count=1 iflag=direct 2>/dev/null | grep -q '^pre ' ||
  fail "$dev: the peer plugin's sector does not read back"
[ ! -e /tmp/peer-mark ] || fail "cleanup or unload ran while serving: $(cat /tmp/peer-mark)"
spid=$(server_pid "$dev")
[ -n "$spid" ] || fail "no server pid for $dev in ubdkit list"
want=$(printf 'cleanup %s\nunload %s' "$spid" "$spid")
del_dev "$dev"
sleep 0.5                       # any other process would have written by now
[ "$(cat /tmp/peer-mark 2>/dev/null)" = "$want" ] ||
  fail "after del, the plugin saw: '$(cat /tmp/peer-mark 2>/dev/null)', not cleanup then unload in the server ($spid)"
ok "plugin cleanup and unload when the ublk server exits"
