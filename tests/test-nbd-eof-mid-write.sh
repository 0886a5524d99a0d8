#!/usr/bin/env bash
# Regression test for a hang found by fuzz/fuzz-nbd (the fuzzer's input is
# fuzz/regressions/hang-eof-mid-write): a client ends its input in the
# middle of a write's payload while replies to earlier requests are still
# queued or being sent.  The server must still close the connection, give
# the request slots back and exit on SIGTERM.
#
# Known bug (XFAIL in Makefile.am until fixed): recv_done's "client
# vanished mid-payload" path marks the connection dead without dropping its
# queued replies (conn_fail does that), and send_done returns early on a
# dead connection, so those replies' slots are never released: the
# connection is never closed, each such client leaks slots until the pool
# is empty and nobody is served, and server_stop waits for ever.
source "${srcdir:-.}/functions.sh"
requires "$PYTHON" -c 'import socket'
requires_prog timeout
make_tmpdir
export tmp

# One loop with four slots: two bad sessions hold all of them if leaked.
sock="$tmp/sock"
"$UBDKIT" serve -t 1 --depth 4 -U "$sock" memory size=16M 2> "$tmp/log" &
pid=$!
# SIGTERM may hang (that is the bug): SIGKILL after 5 s.
cleanup_fn "kill $pid 2>/dev/null; wait_pid_gone $pid 50 || kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null"
for (( i=0; i<200; i++ )); do
  [ -S "$sock" ] && break
  sleep 0.05
done
[ -S "$sock" ] || fail "the server did not start"

cat > "$tmp/eof.py" <<'PY'
import socket, sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[2])
import nbdraw

c = nbdraw.Conn(sys.argv[1])
c.open()
# Replies larger than the socket buffers: the first is still being sent.
for i in range(2):
    c.send_request(nbdraw.CMD_READ, i << 20, 1 << 20, handle=i)
# A write whose payload never fully arrives, then end of input.
c.send_request(nbdraw.CMD_WRITE, 0, 4096, handle=9, payload=b"x" * 100)
time.sleep(0.2)
c.sock.shutdown(socket.SHUT_WR)
c.sock.settimeout(5)
got = 0
try:
    while True:
        b = c.sock.recv(1 << 20)
        if not b:
            break
        got += len(b)
except socket.timeout:
    print("the server kept the connection open (%d bytes read)" % got)
    sys.exit(1)
PY

for n in 1 2; do
  timeout 30 "$PYTHON" "$tmp/eof.py" "$sock" "$srcdir" ||
    fail "session $n: not closed after EOF in a write payload"
done
out=$(timeout 10 $NBDSH -u "nbd+unix:///?socket=$sock" -c 'print(len(h.pread(4096, 0)))') ||
  fail "a normal client is not served afterwards (request slots leaked)"
[ "$out" = 4096 ] || fail "normal client: $out"
kill $pid
wait_pid_gone $pid 100 || fail "the server did not exit on SIGTERM within 10 s"
