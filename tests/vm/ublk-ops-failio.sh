# --recovery=fail-io: while no server runs, I/O fails at once instead of
# waiting; once the supervisor has restarted the server the device serves
# again.  Kernels without USER_RECOVERY_FAIL_IO refuse the option.  Also:
# list shows the states "quiesced" (hold mode) and "fail-io".
. "$VMLIB"

# field DEV NAME: a field of DEV in `ubdkit list --json`, quotes removed.
field () {
  "$UBDKIT" list --json | tr ',' '\n' | awk -v d="\"$1\"" -v f="\"$2\":" '
    /"device":/ { cur = $2 } $1 == f { if (cur == d) { gsub(/"/, "", $2); print $2 } }'
}
# wait_state DEV STATE [OLDPID]: up to 60 s for STATE (and a pid other
# than OLDPID).
wait_state () {
  for _i in $(seq 1 600); do
    if [ "$(field "$1" state)" = "$2" ]; then
      [ -z "$3" ] || { _p=$(field "$1" pid); [ "$_p" != "$3" ] && [ "$_p" != 0 ]; } && return 0
    fi
    sleep 0.1
  done
  "$UBDKIT" list
  fail "$1 not $2 after 60 s"
}
supervisor_of () { awk '{ print $4 }' /proc/$1/stat; }

# Hold mode (the default), with the supervisor stopped: quiesced.
add_dev dev memory size=16M
[ "$(field "$dev" recovery)" = hold ] || fail "list: recovery of $dev is $(field "$dev" recovery), not hold"
spid=$(server_pid "$dev"); sup=$(supervisor_of "$spid")
kill -STOP "$sup"; kill -9 "$spid"
wait_state "$dev" quiesced
kill -CONT "$sup"
wait_state "$dev" live "$spid"
roundtrip "$dev" "hold mode after recovery"
del_dev "$dev"
ok "hold: list shows quiesced while no server runs, live after"

if ! "$UBDKIT" features | grep -qw USER_RECOVERY_FAIL_IO; then
  if "$UBDKIT" add --recovery=fail-io memory size=16M >/dev/null 2>/tmp/fi.err; then
    fail "add --recovery=fail-io succeeded on a kernel without USER_RECOVERY_FAIL_IO"
  fi
  grep -q "lacks USER_RECOVERY_FAIL_IO" /tmp/fi.err || { cat /tmp/fi.err; fail "the refusal does not say why"; }
  [ "$("$UBDKIT" list --json | grep -c '"device"')" = 0 ] || fail "a device was left behind"
  ok "no USER_RECOVERY_FAIL_IO: --recovery=fail-io refused: $(cat /tmp/fi.err)"
  exit 0
fi

truncate -s 128M /tmp/fi.img
add_dev dev -q 2 --recovery=fail-io file file=/tmp/fi.img
[ "$(field "$dev" recovery)" = fail-io ] || fail "list: recovery of $dev is $(field "$dev" recovery), not fail-io"
field "$dev" flag_names | grep -q USER_RECOVERY_FAIL_IO || fail "list: flags of $dev lack USER_RECOVERY_FAIL_IO"
dd if=/dev/urandom of=/tmp/fi.pat bs=1M count=4 2>/dev/null
dd if=/tmp/fi.pat of="$dev" bs=1M seek=64 oflag=direct 2>/dev/null || fail "write the pattern"

# With the supervisor stopped, the server killed: I/O fails, list says fail-io.
spid=$(server_pid "$dev"); sup=$(supervisor_of "$spid")
kill -STOP "$sup"; kill -9 "$spid"
wait_state "$dev" fail-io
if dd if="$dev" of=/dev/null bs=4k count=1 skip=100 iflag=direct 2>/dev/null; then
  fail "a read succeeded while no server runs (fail-io)"
fi
if dd if=/dev/zero of="$dev" bs=4k count=1 oflag=direct 2>/dev/null; then
  fail "a write succeeded while no server runs (fail-io)"
fi
kill -CONT "$sup"
wait_state "$dev" live "$spid"
dd if="$dev" of=/tmp/fi.back bs=1M skip=64 count=4 iflag=direct 2>/dev/null || fail "read after recovery"
cmp -s /tmp/fi.pat /tmp/fi.back || fail "data written before the crash differs after recovery"
roundtrip "$dev" "fail-io after recovery"
ok "fail-io: reads and writes fail at once while no server runs; list shows fail-io; served again after recovery"

# kill -9 with fio running: fio sees errors, then the device works again.
fio --name=fi --filename="$dev" --ioengine=io_uring --direct=1 --rw=randrw \
    --bs=4k --iodepth=16 --size=32M --runtime=60 --time_based \
    --output=/tmp/fi.out >/dev/null 2>&1 &
fio=$!
sleep 3
kill -0 $fio || { cat /tmp/fi.out; fail "fio did not start"; }
spid=$(server_pid "$dev")
kill -9 "$spid"
set +e
wait $fio
st=$?
set -e
[ $st != 0 ] || { cat /tmp/fi.out; fail "fio saw no error across a server kill in fail-io mode"; }
wait_state "$dev" live "$spid"
roundtrip "$dev" "fail-io after a kill under fio"
dd if="$dev" of=/tmp/fi.back bs=1M skip=64 count=4 iflag=direct 2>/dev/null || fail "read the pattern"
cmp -s /tmp/fi.pat /tmp/fi.back || fail "the pattern beyond fio's range changed"
del_dev "$dev"
ok "fail-io: fio failed (exit $st) when the server was killed; served again after recovery"
