#!/bin/bash
# Socket activation of `ubdkit serve` (daemon/systemd.c) with systemd's own
# systemd-socket-activate: one server on a TCP port and two Unix sockets at
# once (one backend: what one client writes the others read), LISTEN_*
# not passed on to --run, and clear errors for descriptors that are not
# listening stream sockets.
source "${srcdir:-.}/functions.sh"
act=$(command -v systemd-socket-activate || echo /lib/systemd/systemd-socket-activate)
[ -x "$act" ] || skip "systemd-socket-activate is not installed (Debian: systemd)"
requires_prog nbdinfo
requires_prog nbdcopy
requires $PYTHON -c 'import nbd'
make_tmpdir

# wait_sock PATH: until systemd-socket-activate has bound it.
wait_sock () {
  for (( i=0; i<100; i++ )); do [ -S "$1" ] && return 0; sleep 0.05; done
  fail "$1 never appeared"
}

port=$(free_tcp_port)
u1=$tmp/one.sock u2=$tmp/two.sock
"$act" -l "127.0.0.1:$port" -l "$u1" -l "$u2" --fdname=tcp:one:two \
  "$UBDKIT" serve -v memory size=16M 2>"$tmp/serve.err" &
pid=$!
cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
wait_sock "$u2"
# Write through the first Unix socket, read through TCP and the second.
head -c 4M /dev/urandom > "$tmp/data"
nbdcopy "$tmp/data" "nbd+unix:///?socket=$u1" || fail "nbdcopy to $u1"
nbdcopy "nbd://127.0.0.1:$port/" "$tmp/back" || fail "nbdcopy from TCP"
cmp -n 4194304 "$tmp/data" "$tmp/back" || fail "TCP read other data than $u1 got"
[ "$(stat -c %s "$tmp/back")" = 16777216 ] || fail "TCP export is not 16M"
DATA=$tmp/data $NBDSH -u "nbd+unix:///?socket=$u2" -c '
import os
d = open(os.environ["DATA"], "rb").read(65536)
assert h.pread(65536, 0) == d, "second Unix socket reads other data"
' || fail "nbdsh on $u2"
[ "$(nbdinfo --size "nbd+unix:///?socket=$u2")" = 16777216 ] || fail "nbdinfo size"
grep -q "socket activation: fd 4 named one" "$tmp/serve.err" ||
  fail "LISTEN_FDNAMES not read: $(cat "$tmp/serve.err")"
# The URI names the first Unix socket; nothing binds the default port.
grep -q "serving .* at nbd+unix:///?socket=$u1" "$tmp/serve.err" ||
  fail "URI: $(grep serving "$tmp/serve.err")"
kill -TERM $pid
wait $pid || fail "activated serve exited $? after SIGTERM"
pid=
[ -S "$u1" ] || fail "serve removed $u1, which is systemd's, not its own"
echo "TCP :$port + 2 Unix sockets: one server, data checked on each"

# TCP alone, and --run (the test's own client starts it): no LISTEN_* inherited, $uri is the activated port.
port=$(free_tcp_port)
"$act" -l "127.0.0.1:$port" "$UBDKIT" serve \
  --run 'env | grep ^LISTEN_ > '"$tmp/env"'; echo "$uri" > '"$tmp/uri"'; nbdinfo --size "$uri" > '"$tmp/size" \
  memory size=2M 2>"$tmp/serve2.err" &
pid=$!
# systemd-socket-activate starts the server at the first connection.
for (( i=0; i<100; i++ )); do
  nbdinfo --size "nbd://127.0.0.1:$port/" >"$tmp/trigger" 2>/dev/null && break
  sleep 0.05
done
[ "$(cat "$tmp/trigger")" = 2097152 ] || fail "first client: $(cat "$tmp/trigger")"
wait $pid || fail "--run under activation: $(cat "$tmp/serve2.err")"
[ "$(cat "$tmp/size")" = 2097152 ] || fail "--run's nbdinfo: $(cat "$tmp/size" "$tmp/serve2.err")"
grep -qx "nbd://localhost:$port/" "$tmp/uri" || fail "uri: $(cat "$tmp/uri")"
[ ! -s "$tmp/env" ] || fail "--run inherited $(cat "$tmp/env")"
echo "TCP alone with --run: \$uri=$(cat "$tmp/uri"), no LISTEN_* passed on"

# Descriptors that are not listening stream sockets: one clear line each.
activated () {  # activated WHAT FD-REDIRECTION: serve with LISTEN_FDS=1
  if bash -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$UBDKIT" serve memory size=1M '"$2" \
       2>"$tmp/bad.err"; then
    fail "serve accepted $1"
  fi
  echo "$1: $(cat "$tmp/bad.err")"
}
activated "a file as fd 3" "3<$tmp/data"
grep -q "fd 3 is not a stream socket" "$tmp/bad.err" || fail "file fd"
activated "no fd 3" "3<&-"
# (fd 3 is then free and our own first descriptor takes it)
grep -q "socket activation: fd 3" "$tmp/bad.err" || fail "closed fd"
$PYTHON -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)   # bound, not listening
s.bind(sys.argv[1])
if s.fileno() != 3: os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
pid = os.fork()
if pid == 0:
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.argv[2], [sys.argv[2], "serve", "memory", "size=1M"])
_, st = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(st))
' "$tmp/nl.sock" "$UBDKIT" 2>"$tmp/bad.err" && fail "a socket that does not listen was accepted"
grep -q "fd 3 is not listening" "$tmp/bad.err" || fail "not listening: $(cat "$tmp/bad.err")"
bash -c 'LISTEN_PID=$$ LISTEN_FDS=many exec "$UBDKIT" serve memory size=1M' 2>"$tmp/bad.err" &&
  fail "LISTEN_FDS=many accepted"
grep -q "LISTEN_FDS=many: expected 1 to 16" "$tmp/bad.err" || fail "count: $(cat "$tmp/bad.err")"
echo "bad descriptors refused"
