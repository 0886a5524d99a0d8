# Several devices at once, a read-only one, backend errors, list, features.
. "$VMLIB"
"$UBDKIT" features | grep -q USER_RECOVERY || fail "features lacks USER_RECOVERY"
add_dev a memory size=64M
add_dev b -r memory size=64M
add_dev c null size=1G
# Thin memory disk: writes beyond the 1 MiB reservation fail with ENOSPC.
add_dev d memory size=64M reserve=1M
n=$("$UBDKIT" list --json | grep -c '"device"')
[ "$n" = 4 ] || fail "list shows $n devices, not 4"
"$UBDKIT" list | grep -q "memory size=64M reserve=1M" || fail "list lacks the backend"
[ "$(blockdev --getro "$b")" = 1 ] || fail "$b is not read-only"
if dd if=/dev/zero of="$b" bs=4k count=1 oflag=direct 2>/dev/null; then
  fail "write to read-only $b succeeded"
fi
ok "read-only device refuses writes"
dd if=/dev/urandom of=/tmp/pat bs=1M count=1 2>/dev/null
dd if=/tmp/pat of="$a" bs=1M seek=3 oflag=direct 2>/dev/null
dd if="$a" of=/tmp/back bs=1M skip=3 count=1 iflag=direct 2>/dev/null
cmp /tmp/pat /tmp/back || fail "data mismatch on $a"
[ "$(blockdev --getsize64 "$c")" = 1073741824 ] || fail "size of $c"
ok "several devices serve independently"
if dd if=/dev/urandom of="$d" bs=1M count=4 oflag=direct 2>/dev/null; then
  fail "writing 4 MiB into a 1 MiB reservation succeeded"
fi
dd if="$d" of=/dev/null bs=1M count=4 iflag=direct 2>/dev/null || fail "reads after ENOSPC"
dd if=/dev/urandom of="$d" bs=4k count=1 oflag=direct 2>/dev/null || fail "overwrite after ENOSPC"
ok "a backend error fails the request; the device keeps serving"
"$UBDKIT" del --all || fail "del --all"
[ "$("$UBDKIT" list --json | grep -c '"device"')" = 0 ] || fail "devices left after del --all"
ok "del --all"
add_dev e memory size=16M
"$UBDKIT" list --json | grep '"device": "'"$e"'"' | grep -q '"io_flusher": "yes"' ||
  { "$UBDKIT" list --json; fail "list does not show the server as an IO_FLUSHER"; }
ok "list shows every server thread is an IO_FLUSHER"
"$UBDKIT" del --all
