# sd_notify from a supervised `ubdkit add --foreground` (what a Type=notify
# unit with NotifyAccess=all runs): READY=1 once the device serves, with
# MAINPID= the supervisor (the notifying server is its child) and a STATUS=
# naming the device; STOPPING=1 when the supervisor gets SIGTERM.
. "$VMLIB"
"$NOTIFY_LISTEN" /run/notify.sock /tmp/msgs &
lp=$!
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /tmp/msgs.bound ] && break; sleep 0.2; done
[ -e /tmp/msgs.bound ] || fail "notify-listen did not start"
NOTIFY_SOCKET=/run/notify.sock "$UBDKIT" add --foreground memory size=16M \
  >/tmp/add.out 2>/tmp/add.err &
sup=$!
for i in $(seq 50); do grep -q READY=1 /tmp/msgs && break; sleep 0.2; done
grep -q READY=1 /tmp/msgs || { cat /tmp/add.err; fail "no READY=1"; }
dev=$(cat /tmp/add.out)
[ -b "$dev" ] || fail "READY=1 but no device: '$dev'"
dd if="$dev" of=/dev/null bs=4k count=1 2>/dev/null || fail "READY=1 but $dev does not read"
grep READY=1 /tmp/msgs | grep -q "MAINPID=$sup" || fail "MAINPID is not the supervisor $sup: $(cat /tmp/msgs)"
grep READY=1 /tmp/msgs | grep -q "STATUS=serving memory size=16M as $dev" ||
  fail "STATUS: $(cat /tmp/msgs)"
ok "add --foreground: $(grep READY=1 /tmp/msgs)"
kill -TERM $sup
wait $sup || fail "supervisor exited $? after SIGTERM"
grep -q STOPPING=1 /tmp/msgs || fail "no STOPPING=1: $(cat /tmp/msgs)"
[ ! -b "$dev" ] || fail "$dev still there after SIGTERM"
[ "$(grep -c READY=1 /tmp/msgs)" = 1 ] || fail "READY=1 not once: $(cat /tmp/msgs)"
kill $lp
ok "SIGTERM: $(grep STOPPING=1 /tmp/msgs); $dev deleted"
