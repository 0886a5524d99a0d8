# The batch protocol (ubdkit add --batch-io, UBLK_F_BATCH_IO).  Where the
# kernel offers it: fio verify with zero copy, with the copy path and with
# a memory backend; the server killed under I/O and recovered with nothing
# failed; live upgrade (without quiesce) under fio verify on ext4; the
# default stays per-tag; several threads per queue refused.  Where it does
# not (6.12): --batch-io refused with the reason.
. "$VMLIB"
dd if=/dev/zero of=/tmp/bt.img bs=1M count=0 seek=256 2>/dev/null

if ! "$UBDKIT" features | grep -qw BATCH_IO; then
  refused "lacks UBLK_F_BATCH_IO" --batch-io file file=/tmp/bt.img
  ok "--batch-io refused: the kernel lacks UBLK_F_BATCH_IO"
  exit 0
fi

add_dev dev file file=/tmp/bt.img
case "$(dev_flags "$dev")" in *BATCH_IO*) fail "the batch protocol by default" ;; esac
del_dev "$dev"
ok "the default is one fetch and commit per request"

for extra in "" --no-zero-copy "memory size=128M"; do
  case "$extra" in
    memory*) backend=$extra; opt= ;;
    *) backend="file file=/tmp/bt.img"; opt=$extra ;;
  esac
  add_dev dev -q 2 -d 32 --batch-io $opt $backend
  f=$(dev_flags "$dev")
  case "$f" in *BATCH_IO*) ;; *) fail "--batch-io: no BATCH_IO in $f" ;; esac
  case "$f" in *QUIESCE*) fail "--batch-io with QUIESCE: $f" ;; esac
  fio --name=verify --filename="$dev" --ioengine=io_uring --direct=1 \
      --rw=randrw --bs=4k-512k --iodepth=32 --numjobs=2 --size=48M --offset_increment=48M \
      --verify=crc32c --verify_fatal=1 --output=/tmp/fio.out >/dev/null 2>&1 ||
    { cat /tmp/fio.out; fail "fio verify, batch: $opt $backend"; }
  grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio errors, batch: $opt $backend"; }
  del_dev "$dev"
  ok "batch protocol, fio randrw verify 4k-512k, 2 jobs x QD32: ${opt:-the default data path} $backend"
done

# The server killed with requests in flight: the kernel holds them, the
# supervisor's new server takes them; fio sees no error.
ioerr0=$(dmesg | grep -c "I/O error" || true)
add_dev dev --batch-io file file=/tmp/bt.img
old=$(server_pid "$dev")
fio --name=kill --filename="$dev" --ioengine=io_uring --direct=1 --rw=randwrite \
    --bs=4k --iodepth=32 --size=64M --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --output=/tmp/kill.out >/dev/null 2>&1 &
fio=$!
sleep 2
kill -9 "$old"
wait $fio || { cat /tmp/kill.out; fail "fio across a killed batch server"; }
grep -q "err= 0" /tmp/kill.out || { cat /tmp/kill.out; fail "fio errors across a killed batch server"; }
new=$(server_pid "$dev")
[ -n "$new" ] && [ "$new" != "$old" ] || fail "no new server after kill -9 ($old -> '$new')"
[ "$(dmesg | grep -c "I/O error" || true)" = "$ioerr0" ] || fail "I/O errors after the kill"
del_dev "$dev"
ok "batch server killed under fio verify: server $old -> $new, no error"

refused "not with several threads per queue" --batch-io --queue-threads 2 file file=/tmp/bt.img
ok "--batch-io with several threads per queue refused"

UPGRADE_OPTS=--batch-io . /vm-upgrade.sh
