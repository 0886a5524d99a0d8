# `ubdkit add` detaches for real (docs/logging.md): $(ubdkit add ... 2>&1)
# returns with the device path as its whole output, and neither the
# supervisor nor the server keeps the caller's stdin, stdout or stderr;
# errors after the fork still reach the caller.  Logs go to syslog (here
# busybox syslogd on /dev/log) or to --log=FILE, which SIGHUP reopens in
# both processes, and which `ubdkit upgrade` (an exec of `ubdkit recover`)
# and `ubdkit recover` keep.
. "$VMLIB"

# stdio_detached PID WHAT: PID's fds 0, 1, 2 are /dev/null.
stdio_detached () {
  for _fd in 0 1 2; do
    _l=$(readlink "/proc/$1/fd/$_fd")
    [ "$_l" = /dev/null ] || fail "$2 ($1): fd $_fd is $_l, not /dev/null"
  done
}
ppid_of () { awk '/^PPid:/ { print $2 }' "/proc/$1/status"; }

# capture ARGS...: out=$(ubdkit ARGS 2>&1), st=its status.  A daemon
# holding the pipe would keep $(...) waiting whatever timeout(1) does, so
# a watchdog waits for the capture itself (60 s).
capture () {
  rm -f /tmp/cap.out /tmp/cap.st
  ( _s=0; _o=$("$UBDKIT" "$@" 2>&1) || _s=$?
    printf '%s' "$_o" > /tmp/cap.out; echo $_s > /tmp/cap.st ) &
  _c=$!
  _i=0
  while [ ! -e /tmp/cap.st ] && [ $_i -lt 300 ]; do sleep 0.2; _i=$((_i + 1)); done
  [ -e /tmp/cap.st ] || { kill $_c; fail "\$(ubdkit $* 2>&1) did not return within 60 s: something kept the pipe"; }
  wait $_c || true
  out=$(cat /tmp/cap.out)
  st=$(cat /tmp/cap.st)
}

# Without a syslog daemon: one line says so, then the path.
capture add memory size=64M
[ $st = 0 ] || fail "add without syslog: status $st: $out"
dev=$(echo "$out" | tail -n 1)
[ -b "$dev" ] || fail "add without syslog: no device path in: $out"
[ "$(echo "$out" | wc -l)" = 2 ] && echo "$out" | head -n 1 | grep -q "warning: syslog: /dev/log" ||
  fail "add without syslog: expected one warning and the path: $out"
del_dev "$dev"
ok "add without /dev/log: one warning line, then $dev"

syslogd -n -O /tmp/messages &
for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /dev/log ] && break; sleep 0.2; done
[ -S /dev/log ] || fail "busybox syslogd did not create /dev/log"

for q in 1 2; do
  capture add -q $q memory size=64M
  [ $st = 0 ] || fail "add -q $q: status $st: $out"
  [ -b "$out" ] || fail "add -q $q: the output is not just a device path: '$out'"
  dev=$out
  spid=$(server_pid "$dev")
  [ -n "$spid" ] || fail "add -q $q: no server pid"
  stdio_detached "$spid" "server"
  stdio_detached "$(ppid_of "$spid")" "supervisor"
  roundtrip "$dev" "add -q $q"
  grep -q "daemon.info ubdkit\[$spid\]: server: ready: serving" /tmp/messages ||
    { cat /tmp/messages; fail "add -q $q: no ready line from server $spid in syslog"; }
  del_dev "$dev"
  ok "dev=\$(ubdkit add -q $q memory size=64M 2>&1) is $dev; stdio detached; syslog has its lines"
done

# An error after the fork, in the server: the id is taken.
capture add -n 7 memory size=16M
[ $st = 0 ] && [ "$out" = /dev/ublkb7 ] || fail "add -n 7: status $st: $out"
capture add -n 7 memory size=16M
[ $st != 0 ] || fail "a second add -n 7 succeeded: $out"
echo "$out" | grep -q "error:" || fail "a second add -n 7: the error did not reach the caller: '$out'"
ok "an error in the server reaches the caller (status $st): $(echo "$out" | head -n 1)"
del_dev /dev/ublkb7

# --log=FILE: both processes; SIGHUP reopens it in both; upgrade keeps it.
truncate -s 64M /tmp/cap.img
capture add --log=/tmp/add.log file file=/tmp/cap.img
[ $st = 0 ] && [ -b "$out" ] || fail "add --log=FILE: status $st: $out"
dev=$out
id=$(dev_id "$dev")
spid=$(server_pid "$dev")
sup=$(ppid_of "$spid")
grep -Eq "^[0-9T:.-]+Z ubdkit\[$spid\]: server: ready" /tmp/add.log ||
  { cat /tmp/add.log; fail "--log=FILE: no timestamped ready line of server $spid"; }
! grep -q "ubdkit\[$spid\]" /tmp/messages || fail "--log=FILE: lines went to syslog too"
mv /tmp/add.log /tmp/add.log.1
kill -HUP "$sup"
for i in 1 2 3 4 5 6 7 8 9 10; do
  [ "$(grep -c "log file reopened" /tmp/add.log 2>/dev/null)" = 2 ] && break
  sleep 0.2
done
grep -q "ubdkit\[$sup\]: supervisor: log file reopened" /tmp/add.log &&
  grep -q "ubdkit\[$spid\]: server: log file reopened" /tmp/add.log ||
  { cat /tmp/add.log; fail "SIGHUP: the log file was not reopened by both"; }
alive "$spid" "after SIGHUP"
ok "--log=FILE: timestamped lines; SIGHUP reopened it in supervisor and server"

capture upgrade "$id"
[ $st = 0 ] || fail "upgrade $id: status $st: $out"
new=$(server_pid "$dev")
[ -n "$new" ] && [ "$new" != "$spid" ] || fail "upgrade: the server is still $spid"
stdio_detached "$new" "the upgraded server"
stdio_detached "$sup" "the re-executed supervisor"
grep -q "ubdkit\[$new\]: server: ready" /tmp/add.log ||
  { cat /tmp/add.log; fail "upgrade: the new server does not log to the --log file"; }
roundtrip "$dev" "after upgrade"
ok "upgrade: \$(... 2>&1) returned; the new server logs to the same file, stdio detached"

# recover: both processes killed, `ubdkit recover ID` brings a new pair.
new_sup=$(ppid_of "$new")
kill -9 "$new_sup" "$new"
sleep 0.5
capture recover "$id"
[ $st = 0 ] && [ "$out" = "$dev" ] || fail "recover $id: status $st: '$out'"
rpid=$(server_pid "$dev")
stdio_detached "$rpid" "the recovered server"
stdio_detached "$(ppid_of "$rpid")" "the recovered supervisor"
roundtrip "$dev" "after recover"
grep -q "daemon.info ubdkit\[$rpid\]: server: ready" /tmp/messages ||
  fail "recover: no syslog line of the new server"
del_dev "$dev"
ok "dev=\$(ubdkit recover $id 2>&1) is $dev; stdio detached"
