# Every thread of the server, io_uring workers included, is an IO_FLUSHER
# (PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE in field 9 of its stat), for
# `ubdkit add` and for `ubdkit serve` with a client doing I/O; --io-flusher=off
# leaves them clear (so the check can fail).  Also the OOM score adjustment
# and the memory lock.
. "$VMLIB"
truncate -s 256M /tmp/a.img

# check_under_io PID set|clear WHAT DEV: the check, repeated while DEV takes
# buffered and direct writes and reads (io_uring workers come and go).
check_under_io () {
  : > /tmp/threads.seen
  (dd if=/dev/urandom of="$4" bs=64k count=300 2>/dev/null; sync
   dd if="$4" of=/dev/null bs=64k count=300 iflag=direct 2>/dev/null
   dd if=/dev/zero of="$4" bs=64k count=300 oflag=direct 2>/dev/null) &
  _io=$!
  _i=0
  while [ $_i -lt 10 ]; do
    check_flusher "$1" "$2" "$3"
    _i=$((_i + 1))
    sleep 0.2
  done
  wait $_io || fail "$3: I/O on $4 failed"
  check_flusher "$1" "$2" "$3"
  ok "$3: every thread $2 ($(sort /tmp/threads.seen | uniq -c | awk '{printf "%s%s x%s", s, $2, $1; s=", "}'))"
}

# --- ubdkit add
for iof in on require; do
  add_dev dev -d 16 --max-io 128k --io-flusher=$iof file file=/tmp/a.img
  pid=$(server_pid "$dev")
  check_under_io "$pid" set "add --io-flusher=$iof" "$dev"
  [ "$(cat /proc/$pid/oom_score_adj)" = -1000 ] || fail "add: oom_score_adj $(cat /proc/$pid/oom_score_adj), not -1000"
  check_locked "$pid" add
  ok "add --io-flusher=$iof: oom_score_adj -1000, $LOCK_INFO"
  del_dev "$dev"
done

# The memory backend: its storage is locked too.
add_dev dev -d 16 --max-io 128k memory size=64M
pid=$(server_pid "$dev")
check_under_io "$pid" set "add memory" "$dev"
check_locked "$pid" "add memory"
[ "${UBDKIT_SANITIZED:-no}" != no ] || [ "$(status_kb "$pid" VmLck)" -ge 65536 ] || fail "add memory: VmLck below the 64 MiB of storage"
ok "add memory size=64M: storage locked; $LOCK_INFO"
del_dev "$dev"

add_dev dev -d 16 --max-io 128k --io-flusher=off --no-mlock --oom-score-adj 500 file file=/tmp/a.img
pid=$(server_pid "$dev")
check_under_io "$pid" clear "add --io-flusher=off" "$dev"
[ "$(cat /proc/$pid/oom_score_adj)" = 500 ] || fail "add --oom-score-adj 500: $(cat /proc/$pid/oom_score_adj)"
lck=$(status_kb "$pid" VmLck)
[ "$lck" = 0 ] || fail "add --no-mlock: VmLck $lck kB"
ok "add --oom-score-adj 500 --no-mlock: oom_score_adj 500, VmLck 0"
del_dev "$dev"

# --- ubdkit serve, with the kernel NBD client doing I/O through it
truncate -s 256M /tmp/b.img
serve_nbd () {
  "$UBDKIT" serve -U /tmp/nbd.sock --daemonize -P /tmp/serve.pid -t 1 --depth 8 \
    --buffer-size 128k "$@" file file=/tmp/b.img || fail "ubdkit serve $*"
  spid=$(cat /tmp/serve.pid)
  nbd-client -N '' -unix /tmp/nbd.sock /dev/nbd0 >/tmp/nbdc.out 2>&1 ||
    { cat /tmp/nbdc.out; fail "nbd-client"; }
}
stop_nbd () {
  nbd-client -d /dev/nbd0 >/dev/null 2>&1 || fail "nbd-client -d"
  kill "$spid"
  for _i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    kill -0 "$spid" 2>/dev/null || return 0
    sleep 0.2
  done
  fail "serve $spid did not exit"
}

for iof in on require; do
  serve_nbd --io-flusher=$iof
  check_under_io "$spid" set "serve --io-flusher=$iof" /dev/nbd0
  [ "$(cat /proc/$spid/oom_score_adj)" = -1000 ] || fail "serve: oom_score_adj $(cat /proc/$spid/oom_score_adj)"
  check_locked "$spid" serve
  ok "serve --io-flusher=$iof: oom_score_adj -1000, $LOCK_INFO"
  stop_nbd
done

serve_nbd --io-flusher=off --no-mlock --oom-score-adj 500
check_under_io "$spid" clear "serve --io-flusher=off" /dev/nbd0
[ "$(cat /proc/$spid/oom_score_adj)" = 500 ] || fail "serve --oom-score-adj 500: $(cat /proc/$spid/oom_score_adj)"
[ "$(status_kb "$spid" VmLck)" = 0 ] || fail "serve --no-mlock: VmLck $(status_kb "$spid" VmLck) kB"
ok "serve --oom-score-adj 500 --no-mlock: oom_score_adj 500, VmLck 0"
stop_nbd
