#!/bin/bash
# Detaching and logging (docs/logging.md), without a kernel driver:
# - `out=$(ubdkit serve --daemonize ... 2>&1)` returns at once (nothing of
#   ours keeps the caller's stdout or stderr), also with -u (its clean-up
#   helper) and with --log=FILE; the daemon's stdio is /dev/null;
# - errors before detaching (a bad backend, a port in use, a pidfile that
#   cannot be written after the fork) reach the captured stderr with a
#   non-zero status;
# - syslog: datagrams "<PRI>ubdkit[PID]: thread: message" (facility
#   daemon) on the socket UBDKIT_SYSLOG_SOCKET names, the default target in
#   the background;
# - --log=FILE: timestamped lines with a level; SIGHUP reopens the file;
# - a flood of bad clients is rate-limited and the drops are counted.
source "${srcdir:-.}/functions.sh"
requires_prog "$PYTHON"
make_tmpdir
cd "$tmp"
# Daemons a failed check left behind.
cleanup_fn 'for f in "$tmp"/pid* "$tmp"/run/pid*; do [ -e "$f" ] && kill "$(cat "$f")"; done'

# No mlock, no OOM adjustment: irrelevant here, and quieter.
QUIET="--no-mlock --oom-score-adj off --io-flusher off"

# A syslog daemon: a datagram socket whose messages go one a line to FILE.
cat > syslogd.py <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(8192) + b"\n")
PY
"$PYTHON" syslogd.py "$tmp/log.sock" "$tmp/syslog.out" &
syslogd=$!
cleanup_fn "kill $syslogd 2>/dev/null"
for (( i=0; i<100; i++ )); do [ -S log.sock ] && break; sleep 0.05; done
[ -S log.sock ] || fail "the test's syslog socket did not appear"
export UBDKIT_SYSLOG_SOCKET="$tmp/log.sock"

# stop_daemon PIDFILE: SIGTERM the daemon, wait until it is gone.
stop_daemon () {
  local p
  p=$(cat "$1") || fail "no pidfile $1"
  kill "$p"
  wait_pid_gone "$p" || fail "daemon $p did not exit on SIGTERM"
}

# capture NAME CMD...: run CMD with stdout and stderr captured by $(...),
# as a caller would: out, status.  A daemon holding the pipe would keep
# $(...) waiting whatever timeout(1) does to CMD, so a watchdog waits for
# the capture itself.
capture () {
  local name=$1 cpid i
  shift
  rm -f cap.out cap.st
  ( set +e; o=$("$@" 2>&1); s=$?
    printf '%s' "$o" > cap.out; echo $s > cap.st ) &
  cpid=$!
  for (( i=0; i<300; i++ )); do [ -e cap.st ] && break; sleep 0.05; done
  if [ ! -e cap.st ]; then
    kill $cpid 2>/dev/null
    fail "$name: \$(... 2>&1) did not return within 15 s: something kept the pipe"
  fi
  wait $cpid || true
  out=$(cat cap.out)
  status=$(cat cap.st)
}

# check_stdio PID: the daemon's stdin, stdout and stderr are /dev/null.
check_stdio () {
  local fd
  for fd in 0 1 2; do
    [ "$(readlink "/proc/$1/fd/$fd")" = /dev/null ] ||
      fail "daemon $1: fd $fd is $(readlink "/proc/$1/fd/$fd"), not /dev/null"
  done
}

# ---------------------------------------------------------------- detach
capture "serve --daemonize" "$UBDKIT" serve --daemonize -P pid1 -U s1 $QUIET memory size=16M
[ $status -eq 0 ] || fail "serve --daemonize: status $status: $out"
[ -z "$out" ] || fail "serve --daemonize printed: $out"
[ -S s1 ] || fail "serve --daemonize: no socket s1 once it returned"
pid1=$(cat pid1)
check_stdio "$pid1"
# Default in the background: syslog, with facility daemon (3) and the
# severity info (6) for the ready line: PRI 30.
for (( i=0; i<50; i++ )); do
  grep -q "^<30>ubdkit\[$pid1\]: main: ready" syslog.out && break
  sleep 0.1
done
grep -q "^<30>ubdkit\[$pid1\]: main: ready" syslog.out ||
  { cat syslog.out; fail "no '<30>ubdkit[$pid1]: main: ready' datagram"; }
stop_daemon pid1
grep -q "^<30>ubdkit\[$pid1\]: main: signal 15" syslog.out ||
  fail "no syslog line for the SIGTERM"
[ ! -e pid1 ] || fail "serve --daemonize left its pidfile"

# --log=stderr keeps the caller's stderr, as asked: not captured here, but
# the daemon's fd 2 is the file the caller gave.
"$UBDKIT" serve --daemonize --log=stderr -P pid2 -U s2 $QUIET memory size=16M \
  2>stderr2.out
[ "$(readlink /proc/$(cat pid2)/fd/2)" = "$tmp/stderr2.out" ] ||
  fail "--log=stderr --daemonize: stderr is $(readlink /proc/$(cat pid2)/fd/2)"
stop_daemon pid2
grep -q "ubdkit\[main\]: ready" stderr2.out || fail "--log=stderr: no ready line on stderr"

# The clean-up helper of -u (privs.c) must not hold the pipe either.
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1; then
  mkdir -p run && chmod 755 run
  capture "serve --daemonize -u nobody" \
    "$UBDKIT" serve --daemonize -u nobody -P run/pid3 -U run/s3 $QUIET memory size=16M
  [ $status -eq 0 ] || fail "serve --daemonize -u nobody: status $status: $out"
  check_stdio "$(cat run/pid3)"
  stop_daemon run/pid3
  for (( i=0; i<50; i++ )); do [ ! -e run/s3 ] && break; sleep 0.1; done
  [ ! -e run/s3 ] || fail "-u nobody: the helper did not remove the socket"
else
  echo "$0: not root (or no user nobody): -u's helper not checked"
fi

# --run (captive mode) keeps the caller's stdio by design, and ends with
# its command; it cannot be combined with --daemonize.
capture "serve --run" "$UBDKIT" serve -U - $QUIET --run 'echo "uri=$uri"' memory size=16M
[ $status -eq 0 ] || fail "serve --run: status $status: $out"
echo "$out" | grep -q '^uri=nbd+unix://' || fail "serve --run: no uri in: $out"
capture "--run --daemonize" "$UBDKIT" serve --daemonize -U s4 --run true memory size=16M
[ $status -eq 2 ] && echo "$out" | grep -q "do not go together" ||
  fail "--daemonize --run: status $status: $out"

# ---------------------------------------------------------------- errors reach the caller
capture "bad backend" "$UBDKIT" serve --daemonize -U s5 -P pid5 nosuchbackend
[ $status -ne 0 ] || fail "a bad backend: status 0"
echo "$out" | grep -q "nosuchbackend" || fail "a bad backend: the error was not captured: $out"
[ ! -e pid5 ] || fail "a bad backend left a pidfile"

port=$(free_tcp_port)
"$PYTHON" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); open(sys.argv[2], "w").close()
time.sleep(60)' "$port" "$tmp/port.ready" &
holder=$!
cleanup_fn "kill $holder 2>/dev/null"
for (( i=0; i<100; i++ )); do [ -e port.ready ] && break; sleep 0.05; done
capture "port in use" "$UBDKIT" serve --daemonize --bind 127.0.0.1 -p "$port" $QUIET memory size=16M
[ $status -ne 0 ] || fail "a port in use: status 0"
echo "$out" | grep -qi "in use" || fail "a port in use: the error was not captured: $out"
kill $holder

# After the fork, before detaching: still the caller's stderr.
capture "bad pidfile" "$UBDKIT" serve --daemonize -P "$tmp/nodir/pid" -U s6 $QUIET memory size=16M
[ $status -eq 1 ] || fail "an unwritable pidfile: status $status: $out"
echo "$out" | grep -q "error: --pidfile $tmp/nodir/pid" ||
  fail "an unwritable pidfile: the error was not captured: $out"

# Bad --log arguments: usage errors.
capture "--log=" "$UBDKIT" serve --log= -U s7 memory size=16M
[ $status -eq 2 ] && echo "$out" | grep -q "invalid --log" || fail "--log=: status $status: $out"
capture "--log=dir" "$UBDKIT" serve --log="$tmp/nodir/x.log" -U s7 memory size=16M
[ $status -eq 2 ] && echo "$out" | grep -q -- "--log $tmp/nodir/x.log: open:" ||
  fail "--log=missing dir: status $status: $out"

# An unreachable syslog: one line says so, the daemon still starts.
capture "no syslog" env UBDKIT_SYSLOG_SOCKET="$tmp/nosuch.sock" \
  "$UBDKIT" serve --daemonize -P pid8 -U s8 $QUIET memory size=16M
[ $status -eq 0 ] || fail "no syslog socket: status $status: $out"
echo "$out" | grep -q "warning: syslog: $tmp/nosuch.sock: No such file" ||
  fail "no syslog socket: not said: $out"
[ "$(echo "$out" | wc -l)" -eq 1 ] || fail "no syslog socket: more than one line: $out"
stop_daemon pid8

# ---------------------------------------------------------------- --log=FILE
capture "--log=FILE" "$UBDKIT" serve --daemonize --log=file.log -P pid9 -U s9 -t 1 \
  $QUIET memory size=16M
[ $status -eq 0 ] && [ -z "$out" ] || fail "--log=FILE: status $status: $out"
pid9=$(cat pid9)
check_stdio "$pid9"
ts='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'
grep -Eq "^$ts ubdkit\[$pid9\]: main: ready" file.log ||
  { cat file.log; fail "--log=FILE: no timestamped ready line"; }

# A flood of bad clients on the one loop thread: bad option magic, which
# closes each connection.  Each line costs the server; only 5 a second
# get through, and the next line let through counts the rest.
cat > flood.py <<'PY'
import sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[2])
import nbdraw

def bad():
    c = nbdraw.Conn(sys.argv[1])
    c.handshake()
    c.send_option(nbdraw.OPT_GO, magic=0x1234)
    c.wait_closed()
    c.close()

for i in range(int(sys.argv[3])):
    bad()
time.sleep(1.1)         # a new second: the drops are reported
bad()
PY
"$PYTHON" flood.py "$tmp/s9" "$srcdir" 60 || fail "flood.py failed"
for (( i=0; i<50; i++ )); do
  [ "$(grep -c 'bad option magic' file.log)" -ge 1 ] &&
    grep -q 'rate limit: [0-9]* lines dropped' file.log && break
  sleep 0.1
done
logged=$(grep -c 'warning: .*bad option magic' file.log || true)
dropped=$(sed -n 's/.*warning: rate limit: \([0-9]*\) lines dropped.*/\1/p' file.log |
          awk '{ s += $1 } END { print s + 0 }')
echo "flood of 61: $logged logged, $dropped counted as dropped"
[ "$dropped" -gt 0 ] || { cat file.log; fail "the flood was not rate-limited"; }
[ $((logged + dropped)) -eq 61 ] ||
  { cat file.log; fail "logged $logged + dropped $dropped != 61 bad clients"; }
# Not one of them reached syslog: the target is the file.
! grep -q "ubdkit\[$pid9\]" syslog.out || fail "--log=FILE: lines went to syslog too"

# SIGHUP reopens the file (logrotate moved it); the server keeps serving.
mv file.log file.log.1
kill -HUP "$pid9"
for (( i=0; i<50; i++ )); do [ -s file.log ] && break; sleep 0.1; done
grep -q "main: log file reopened" file.log || fail "SIGHUP did not reopen the log file"
kill -0 "$pid9" || fail "SIGHUP stopped the server"
stop_daemon pid9
grep -q "main: signal 15" file.log || fail "no line in the reopened file"

# ---------------------------------------------------------------- --log=syslog in the foreground
: > syslog.out
"$UBDKIT" serve --log=syslog -U s10 $QUIET --run 'true' memory size=16M 2>fg.err ||
  fail "serve --log=syslog --run true failed"
grep -Eq '^<30>ubdkit\[[0-9]+\]: main: ready' syslog.out || fail "--log=syslog: no ready line"
! grep -q "ready" fg.err || fail "--log=syslog: info lines on stderr too"
exit 0
