# ubdkit del refuses a device in use -- a mounted ext4, a process holding
# it open -- unless --force, and the device serves on afterwards.
# TRY_STOP_DEV (kernel feature SAFE_STOP_DEV) where the kernel has it, an
# O_EXCL open and a look through /proc/*/fd elsewhere.
. "$VMLIB"
if "$UBDKIT" features | grep -qw SAFE_STOP_DEV; then how=TRY_STOP_DEV; else how="O_EXCL open and /proc"; fi
add_dev dev memory size=64M
id=$(dev_id "$dev")
pid=$(server_pid "$dev")
mkfs.ext4 -q -F "$dev" && mkdir -p /mnt/od && mount "$dev" /mnt/od || fail "ext4 on $dev"
echo before > /mnt/od/file
if "$UBDKIT" del "$id" 2>/tmp/del.err; then fail "del of a mounted device succeeded"; fi
grep -q "not deleted" /tmp/del.err || { cat /tmp/del.err; fail "del refusal does not say so"; }
[ -b "$dev" ] || fail "$dev gone after the refused del"
alive "$pid" "after the refused del"
echo after > /mnt/od/file2 && sync || fail "write after the refused del"
umount /mnt/od
mount "$dev" /mnt/od || fail "remount after the refused del"
[ "$(cat /mnt/od/file /mnt/od/file2)" = "before
after" ] || fail "files after the refused del"
umount /mnt/od
ok "del refuses a mounted ext4 ($how): $(cat /tmp/del.err)"

sleep 600 < "$dev" &
holder=$!
sleep 0.5
if "$UBDKIT" del "$id" 2>/tmp/del.err; then fail "del of a device open by a process succeeded"; fi
grep -q "not deleted" /tmp/del.err || { cat /tmp/del.err; fail "del refusal does not say so"; }
if "$UBDKIT" del --all 2>/dev/null; then fail "del --all of a device open by a process succeeded"; fi
alive "$pid" "after the refused del of an open device"
roundtrip "$dev" "after the refused del of an open device"
kill "$holder"; wait "$holder" 2>/dev/null || true
ok "del refuses a device open by a process ($how): $(cat /tmp/del.err)"
del_dev "$dev"
ok "del once nobody holds the device"

# del --force of a mounted device: tests/vm/ublk-del-busy.sh (test-vm-ublk).
