# fio verify with two queues; discard and write-zeroes read back as zeros.
# The last round has queue threads that poll (--poll): completions they
# find by polling must be the same as those they sleep for.
. "$VMLIB"
truncate -s 256M /tmp/fio.img
for backend in "file file=/tmp/fio.img" "memory size=256M" \
               "--poll 100 memory size=256M"; do
  add_dev dev -q 2 -d 64 $backend
  fio --name=verify --filename="$dev" --ioengine=io_uring --direct=1 \
      --rw=randrw --bs=4k-128k --iodepth=64 --size=96M --verify=crc32c \
      --verify_fatal=1 --output=/tmp/fio.out >/dev/null 2>&1 ||
    { cat /tmp/fio.out; fail "fio verify on $backend"; }
  grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio errors on $backend"; }
  ok "fio randrw verify=crc32c iodepth 64, 2 queues: $backend"
  dd if=/dev/urandom of="$dev" bs=1M count=4 oflag=direct 2>/dev/null
  /usr/sbin/blkdiscard -o 0 -l 1M "$dev" || fail "blkdiscard on $backend"
  /usr/sbin/blkdiscard -z -o 1M -l 1M "$dev" || fail "blkdiscard -z on $backend"
  n=$(dd if="$dev" bs=1M count=2 iflag=direct 2>/dev/null | od -An -tx1 -v | tr -d ' 0\n' | wc -c)
  [ "$n" = 0 ] || fail "discarded/zeroed range not zero on $backend"
  n=$(dd if="$dev" bs=1M skip=2 count=2 iflag=direct 2>/dev/null | od -An -tx1 -v | tr -d ' 0\n' | wc -c)
  [ "$n" != 0 ] || fail "data next to the zeroed range lost on $backend"
  ok "blkdiscard and blkdiscard -z read back as zeros: $backend"
  del_dev "$dev"
done
