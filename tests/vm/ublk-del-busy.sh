# Deleting a device while fio runs on it: fio sees errors, the server
# exits cleanly, nothing hangs (the harness checks for kernel warnings).
. "$VMLIB"
add_dev dev -q 2 memory size=256M
pid=$(server_pid "$dev")
fio --name=busy --filename="$dev" --ioengine=io_uring --direct=1 \
    --rw=randrw --bs=4k --iodepth=32 --numjobs=2 --runtime=60 --time_based \
    --output=/tmp/busy.out >/dev/null 2>&1 &
fio=$!
sleep 3
kill -0 $fio || fail "fio did not start"
"$UBDKIT" del --force "$(dev_id "$dev")" || fail "del --force under load"
set +e
wait $fio
st=$?
set -e
[ $st != 0 ] || fail "fio did not see errors after del"
kill -0 "$pid" 2>/dev/null && fail "server $pid still running"
[ ! -b "$dev" ] || fail "$dev still exists"
ok "del while fio runs: fio saw errors (exit $st), server gone"
# Deleting a device under a mounted filesystem must not hang either.
add_dev dev memory size=128M
mkfs.ext4 -q -F "$dev" && mkdir -p /mnt/busy && mount "$dev" /mnt/busy
echo data > /mnt/busy/file
pid=$(server_pid "$dev")
"$UBDKIT" del --force "$(dev_id "$dev")" || fail "del --force under a mounted filesystem"
kill -0 "$pid" 2>/dev/null && fail "server $pid still running"
umount /mnt/busy 2>/dev/null || true
[ ! -b "$dev" ] || fail "$dev still exists"
ok "del under a mounted filesystem returns; server gone"
