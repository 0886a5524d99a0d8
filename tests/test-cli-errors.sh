#!/usr/bin/env bash
# Command-line contract: usage errors exit 2 with a one-line message,
# --help/--version exit 0, --run propagates the status, --daemonize works.
source "${srcdir:-.}/functions.sh"
make_tmpdir

# expect_usage_error ARGS...: exit status 2 and exactly one line on stderr.
expect_usage_error () {
  local status=0
  timeout 10 "$UBDKIT" "$@" </dev/null >"$tmp/out" 2>"$tmp/err" || status=$?
  [ $status -eq 2 ] ||
    fail "ubdkit $*: expected exit status 2, got $status (stderr: $(cat "$tmp/err"))"
  [ "$(wc -l < "$tmp/err")" -eq 1 ] ||
    fail "ubdkit $*: expected a one-line error on stderr, got: $(cat "$tmp/err")"
}
expect_usage_error serve --no-such-option memory size=1M
expect_usage_error --no-such-option
expect_usage_error serve -U - memory size=banana
expect_usage_error serve -U - memory size=1M nosuchkey=1
expect_usage_error serve -U - nosuchbackend
expect_usage_error serve --poll soon -U - memory size=1M
expect_usage_error add --poll soon null size=1M
expect_usage_error serve --allow 10.0.0.0/33 -U - memory size=1M
expect_usage_error serve --deny uid:no-such-user-xyz -U - memory size=1M
expect_usage_error serve -u no-such-user-xyz -U - memory size=1M
expect_usage_error serve --unix-mode 8 -U - memory size=1M
truncate -s 1M "$tmp/x"
expect_usage_error serve -U - file file="$tmp/x" direct=maybe

for args in --help "serve --help" --version; do
  status=0
  $UBDKIT $args >"$tmp/out" 2>&1 || status=$?
  [ $status -eq 0 ] || fail "ubdkit $args: exit status $status"
  [ -s "$tmp/out" ] || fail "ubdkit $args printed nothing"
done
$UBDKIT --version | grep -q '[0-9]\.[0-9]' || fail "ubdkit --version has no version number"
for args in --help "serve --help"; do
  for word in serve file memory null; do
    $UBDKIT $args | grep -qw $word || fail "ubdkit $args does not mention '$word'"
  done
done

# Captive mode: private socket exists; the command's status is ours.
$UBDKIT serve -U - --run 'test -S "$unixsocket"' memory size=1M ||
  fail "--run 'test -S \$unixsocket' failed"
status=0
$UBDKIT serve -U - --run 'exit 3' memory size=1M || status=$?
[ $status -eq 3 ] || fail "--run 'exit 3': exit status $status, expected 3"

# --daemonize --pidfile: the parent exits 0, SIGTERM stops the daemon.
cleanup_fn "test -s '$tmp/pid' && kill \$(cat '$tmp/pid') 2>/dev/null"
status=0
$UBDKIT serve --daemonize --pidfile "$tmp/pid" -U "$tmp/sock" memory size=1M ||
  status=$?
[ $status -eq 0 ] || fail "--daemonize: exit status $status"
for (( i=0; i<100; i++ )); do [ -s "$tmp/pid" ] && break; sleep 0.1; done
[ -s "$tmp/pid" ] || fail "--daemonize: pidfile $tmp/pid not written"
dpid=$(cat "$tmp/pid")
kill -0 "$dpid" 2>/dev/null || fail "--daemonize: pid $dpid is not running"
for (( i=0; i<100; i++ )); do [ -S "$tmp/sock" ] && break; sleep 0.1; done
[ -S "$tmp/sock" ] || fail "--daemonize: socket $tmp/sock not created"
if command -v nbdinfo >/dev/null; then
  nbdinfo --size "nbd+unix:///?socket=$tmp/sock" | grep -qx 1048576 ||
    fail "--daemonize: nbdinfo --size did not return 1048576"
fi
kill -TERM "$dpid"
wait_pid_gone "$dpid" || fail "daemon pid $dpid still running 10s after SIGTERM"

# SIGINT, like SIGTERM, stops a foreground server with exit status 0.
start_server isock ipid memory size=1M
kill -INT "$ipid"
status=0; wait "$ipid" || status=$?
[ $status -eq 0 ] || fail "ubdkit serve exited with status $status after SIGINT"
