# nbdkit filters under a ublk device: the offset filter over the file
# backend puts the data where nbdkit's would, and the chain comes back
# when the server is replaced from the device's record (`ubdkit upgrade`
# execs `ubdkit recover`, which reads it): a server that lost the filter
# would write at the start of the file.
. "$VMLIB"
truncate -s 64M /tmp/flt.img
add_dev dev --filter=offset file file=/tmp/flt.img offset=1M range=32M
id=$(dev_id "$dev")
sectors=$(cat /sys/block/ublkb$id/size)
[ "$sectors" = $((32 << 11)) ] || fail "size through --filter=offset: $sectors sectors"
at () {   # at FILE_OFFSET TEXT: TEXT is at FILE_OFFSET of the backing file
  [ "$(dd if=/tmp/flt.img bs=1 skip=$1 count=${#2} 2>/dev/null)" = "$2" ]
}
{ printf before; dd if=/dev/zero bs=4090 count=1 2>/dev/null; } |
  dd of="$dev" bs=4096 count=1 oflag=direct 2>/dev/null || fail "write before"
at $((1 << 20)) before || fail "the write did not land at the filter's offset"
"$UBDKIT" list | grep -q -- "--filter=offset file" || fail "list does not show the filter"
old=$(server_pid "$dev")
"$UBDKIT" upgrade "$id" >/tmp/flt.msg 2>&1 || { cat /tmp/flt.msg; fail "upgrade of a filtered device"; }
new=$(server_pid "$dev")
[ -n "$new" ] && [ "$new" != "$old" ] || fail "server $old not replaced ('$new')"
{ printf after; dd if=/dev/zero bs=4091 count=1 2>/dev/null; } |
  dd of="$dev" bs=4096 count=1 seek=1 oflag=direct 2>/dev/null || fail "write after"
at $(((1 << 20) + 4096)) after || fail "after the upgrade the filter is gone"
at 4096 after && fail "after the upgrade a write landed without the offset"
"$UBDKIT" list | grep -q -- "--filter=offset file" || fail "list lost the filter after the upgrade"
ok "--filter=offset under /dev/ublkb$id: data at the offset, the chain kept across an upgrade"
"$UBDKIT" del "$id" || fail "del"
