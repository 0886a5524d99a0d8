# Several threads per queue (UBLK_F_PER_IO_DAEMON): tag t of a queue is
# served by thread t % N.  Where the kernel offers it: the threads exist,
# each serves I/O (fio verify), and the device works with zero copy and
# with the copy path.  Where it does not (6.12): refused with the reason,
# and no device is left behind.
. "$VMLIB"
dd if=/dev/zero of=/tmp/qt.img bs=1M count=0 seek=128 2>/dev/null

if ! "$UBDKIT" features | grep -qw PER_IO_DAEMON; then
  refused "lacks UBLK_F_PER_IO_DAEMON" --queue-threads 2 file file=/tmp/qt.img
  ok "--queue-threads 2 refused: the kernel lacks UBLK_F_PER_IO_DAEMON"
  exit 0
fi

for extra in "" --no-zero-copy "memory size=128M"; do
  case "$extra" in
    memory*) backend=$extra; opt= ;;
    *) backend="file file=/tmp/qt.img"; opt=$extra ;;
  esac
  add_dev dev -q 2 --queue-threads 3 -d 16 $opt $backend
  pid=$(server_pid "$dev")
  n=$(cat /proc/$pid/task/*/comm | grep -c "^ublk$(dev_id "$dev")-q[01]\.[012]$") || true
  [ "$n" = 6 ] || { cat /proc/$pid/task/*/comm; fail "expected 6 queue threads (2 queues x 3), found $n"; }
  before=$(for t in /proc/$pid/task/*; do
             grep -q "^ublk.*-q" $t/comm && awk '{ print $14 + $15 }' $t/stat; done | tr '\n' ' ')
  fio --name=verify --filename="$dev" --ioengine=io_uring --direct=1 \
      --rw=randrw --bs=4k-128k --iodepth=32 --numjobs=2 --size=48M --offset_increment=48M \
      --verify=crc32c --verify_fatal=1 --output=/tmp/fio.out >/dev/null 2>&1 ||
    { cat /tmp/fio.out; fail "fio verify with 3 threads per queue: $opt $backend"; }
  grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio errors: $opt $backend"; }
  # Every thread served: its CPU time grew (tags of one queue are spread
  # over its threads whatever CPU submits).
  after=$(for t in /proc/$pid/task/*; do
            grep -q "^ublk.*-q" $t/comm && awk '{ print $14 + $15 }' $t/stat; done | tr '\n' ' ')
  idle=$(echo "$before" "$after" | awk '{ n = NF / 2; c = 0
    for (i = 1; i <= n; i++) if ($(i + n) <= $i) c++; print c }')
  echo "queue threads' CPU ticks before: $before after: $after"
  [ "$idle" = 0 ] || fail "$idle of the 6 queue threads served nothing"
  del_dev "$dev"
  ok "2 queues x 3 threads, each serving, fio verify clean: ${opt:-the default data path} $backend"
done
