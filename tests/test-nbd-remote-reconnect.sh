#!/usr/bin/env bash
# The remote backend survives its remote going away.  The remote is a
# `ubdkit serve file` on a file, so the data survives it: killed (SIGKILL)
# and restarted twice during a fio verify=crc32c run through the proxy, fio
# completes with no error and every block verifies.  With too few retries,
# the client gets EIO while the remote is down, and the same proxy serves
# again once the remote is back.
source "${srcdir:-.}/functions.sh"
requires_prog fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio lacks the nbd ioengine"
requires $NBDSH -c pass
requires_prog nbdinfo
$UBDKIT --help 2>&1 | grep -q '^  nbd ' || skip "built without libnbd"
make_tmpdir
export tmp

truncate -s 64M "$tmp/disk"
rsock="$tmp/remote.sock"
remote="nbd+unix:///?socket=$rsock"
rpid=
cleanup_fn 'kill -9 $rpid 2>/dev/null'

start_remote () {
  rm -f "$rsock"
  $UBDKIT serve -U "$rsock" file file="$tmp/disk" 2>> "$tmp/remote.log" &
  rpid=$!
  # Until it answers: its socket listens before it serves.
  for i in $(seq 200); do
    nbdinfo --size "$remote" >/dev/null 2>&1 && return
    sleep 0.05
  done
  fail "the remote did not start"
}
kill_remote () {
  kill -9 $rpid
  wait $rpid 2>/dev/null || :
}

start_remote
# Two loop threads, one connection to the remote, two fio connections: one
# loop drives the connection, the other hands its requests over to it.
start_server sock pid -t 2 nbd uri="$remote" retry=30 retry-delay=0.1
proxy="nbd+unix:///?socket=$sock"
nbdinfo --size "$proxy" >/dev/null || fail "the proxy does not answer"

cat > "$tmp/job.fio" <<FIO
[global]
ioengine=nbd
uri=$proxy
rw=randwrite
bs=4k
iodepth=16
size=16m
# About four seconds of writes, so the remote dies twice in the middle.
rate_iops=1000
verify=crc32c
verify_fatal=1
do_verify=1
verify_state_save=0

[a]
offset=0

[b]
offset=32m
FIO
fio --output="$tmp/fio.out" "$tmp/job.fio" &
fpid=$!
cleanup_fn "kill $fpid 2>/dev/null"
# Kill the remote twice while fio runs, each time down for half a second.
for round in 1 2; do
  sleep 0.7
  kill -0 $fpid 2>/dev/null || fail "fio finished before round $round: too fast to test anything"
  kill_remote
  sleep 0.5
  start_remote
done
wait $fpid || { cat "$tmp/fio.out"; fail "fio failed through the proxy"; }
[ "$(grep -c 'err= 0' "$tmp/fio.out")" = 2 ] ||
  { cat "$tmp/fio.out"; fail "fio: expected two jobs with err= 0"; }
if grep -Ei 'verify.*(bad|fail)|crc32c: wanted' "$tmp/fio.out"; then
  fail "fio reported verify errors"
fi
kill -0 $pid || fail "the proxy died"

# Retries exhausted: EIO reaches the client, the proxy stays up.
start_server sock2 pid2 nbd uri="$remote" retry=2 retry-delay=0.1
proxy2="nbd+unix:///?socket=$sock2"
$NBDSH -u "$proxy2" -c 'h.pwrite(b"z" * 4096, 0); h.flush()'
kill_remote
$NBDSH -u "$proxy2" -c '
import errno
try:
    h.pread(4096, 0)
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
else:
    assert False, "read succeeded with the remote down"
' || fail "the client did not get EIO with the remote down"
kill -0 $pid2 || fail "the proxy died when its retries were exhausted"
start_remote
$NBDSH -u "$proxy2" -c 'assert h.pread(4096, 0) == b"z" * 4096' ||
  fail "the proxy does not serve again after the remote came back"
