#!/bin/bash
# sd_notify (daemon/systemd.c) with a NOTIFY_SOCKET this test listens on:
# READY=1 exactly once and only when a client is answered, a STATUS= line,
# STOPPING=1 on SIGTERM; an abstract socket with --daemonize (MAINPID= the
# daemon's pid); a bad NOTIFY_SOCKET is one clear error.
source "${srcdir:-.}/functions.sh"
requires $PYTHON -c 'import nbd'
make_tmpdir

# listen ADDR OUT [SOCKET]: a notify listener in the background.
listen () {
  $PYTHON "$srcdir/systemd-notify-listen.py" "$@" &
  cleanup_fn "kill $! 2>/dev/null"
  for (( i=0; i<100; i++ )); do [ -e "$2.bound" ] && return 0; sleep 0.05; done
  fail "notify listener did not start"
}
# wait_line FILE PATTERN: until FILE has a line matching PATTERN (10 s).
wait_line () {
  for (( i=0; i<200; i++ )); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  cat "$1"; fail "no '$2' in $1"
}

# Path socket, foreground server.
sock=$tmp/nbd.sock
listen "$tmp/notify" "$tmp/msgs" "$sock"
NOTIFY_SOCKET=$tmp/notify "$UBDKIT" serve -U "$sock" memory size=16M \
  2>"$tmp/serve.err" &
pid=$!
cleanup_fn "kill $pid 2>/dev/null"
wait_line "$tmp/msgs" "^ANSWERS size=16777216"
grep -q "NOT-ANSWERING" "$tmp/msgs" && fail "READY=1 before serving: $(cat "$tmp/msgs")"
grep "READY=1" "$tmp/msgs" | grep -q "STATUS=serving 1 export at nbd+unix:///?socket=$sock" ||
  fail "no STATUS with READY: $(cat "$tmp/msgs")"
kill -TERM $pid
wait $pid || fail "serve exited $? after SIGTERM"
wait_line "$tmp/msgs" "STOPPING=1"
[ "$(grep -c 'READY=1' "$tmp/msgs")" = 1 ] || fail "READY=1 not once: $(cat "$tmp/msgs")"
# STOPPING comes after READY.
[ "$(grep -n 'READY=1' "$tmp/msgs" | cut -d: -f1)" -lt \
  "$(grep -n 'STOPPING=1' "$tmp/msgs" | cut -d: -f1)" ] || fail "order: $(cat "$tmp/msgs")"
echo "path NOTIFY_SOCKET: $(tr '\n' '/' < "$tmp/msgs")"

# Abstract socket, --daemonize: MAINPID names the daemon (its pidfile).
sock2=$tmp/nbd2.sock
abs="@ubdkit-test-$$-$RANDOM"
listen "$abs" "$tmp/msgs2" "$sock2"
out=$(NOTIFY_SOCKET=$abs "$UBDKIT" serve --daemonize -P "$tmp/pid" -U "$sock2" \
      memory size=1M 2>"$tmp/serve2.err") || fail "serve --daemonize: $(cat "$tmp/serve2.err")"
dpid=$(cat "$tmp/pid")
cleanup_fn "kill $dpid 2>/dev/null"
wait_line "$tmp/msgs2" "^ANSWERS size=1048576"
grep "READY=1" "$tmp/msgs2" | grep -q "MAINPID=$dpid" ||
  fail "MAINPID is not the daemon's pid $dpid: $(cat "$tmp/msgs2")"
kill -TERM "$dpid"
wait_line "$tmp/msgs2" "STOPPING=1"
wait_pid_gone "$dpid" || fail "daemon $dpid did not exit"
echo "abstract NOTIFY_SOCKET, --daemonize: MAINPID=$dpid"

# The --run command does not inherit NOTIFY_SOCKET (it would speak for us).
NOTIFY_SOCKET=$tmp/notify "$UBDKIT" serve -U - \
  --run 'echo "NOTIFY_SOCKET=${NOTIFY_SOCKET-unset}" > '"$tmp/env" memory size=1M 2>/dev/null ||
  fail "serve --run"
grep -qx "NOTIFY_SOCKET=unset" "$tmp/env" || fail "--run inherited $(cat "$tmp/env")"

# A bad NOTIFY_SOCKET: one line, exit status 1, nothing served.
for bad in relative/path @ "/$(printf 'x%.0s' {1..120})"; do
  if NOTIFY_SOCKET=$bad "$UBDKIT" serve -U - memory size=1M 2>"$tmp/bad.err"; then
    fail "NOTIFY_SOCKET=$bad accepted"
  fi
  grep -q "NOTIFY_SOCKET=.*not an absolute path" "$tmp/bad.err" ||
    fail "NOTIFY_SOCKET=$bad: $(cat "$tmp/bad.err")"
done
echo "bad NOTIFY_SOCKET: $(head -1 "$tmp/bad.err")"
