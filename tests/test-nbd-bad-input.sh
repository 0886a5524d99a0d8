#!/usr/bin/env bash
# Raw-socket bad-input tests of the NBD server: bad handshake, huge and
# unknown options, unknown commands, out-of-range and overflowing requests,
# bad request magic, disconnects with requests in flight, writes to a
# read-only export.  After each case a well-behaved libnbd client must
# still read the right data and the servers must still be running.
# The cases themselves are in test-nbd-bad-input.py (using nbdraw.py).
source "${srcdir:-.}/functions.sh"
[ -x "$UBDKIT" ] || fail "$UBDKIT is not built"
requires "$PYTHON" -c 'import nbd'
requires_prog timeout

make_tmpdir
start_server rw_sock rw_pid memory size=64M
start_server ro_sock ro_pid -r memory size=64M

status=0
timeout 300 "$PYTHON" "$srcdir/test-nbd-bad-input.py" \
  "$rw_sock" "$rw_pid" "$ro_sock" "$ro_pid" || status=$?
[ $status -ne 124 ] || fail "test-nbd-bad-input.py timed out"
[ $status -eq 0 ] || fail "a bad-input case failed (see above)"
for pid in "$rw_pid" "$ro_pid"; do
  kill -0 "$pid" 2>/dev/null || fail "server pid $pid is gone at the end"
done
