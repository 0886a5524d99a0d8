#!/usr/bin/env bash
# Extended headers (64-bit lengths, BLOCK_STATUS_EXT, PAYLOAD_LEN rules)
# and sparse reads, over raw sockets: libnbd 1.14 cannot negotiate
# extended headers.  The cases are in test-nbd-extended.py (using
# nbdraw.py); after each, libnbd must read back what they wrote.
source "${srcdir:-.}/functions.sh"
[ -x "$UBDKIT" ] || fail "$UBDKIT is not built"
requires "$PYTHON" -c 'import nbd'
requires_prog timeout

make_tmpdir
start_server sock pid memory size=8G reserve=64M

status=0
timeout 300 "$PYTHON" "$srcdir/test-nbd-extended.py" "$sock" "$pid" ||
  status=$?
[ $status -ne 124 ] || fail "test-nbd-extended.py timed out"
[ $status -eq 0 ] || fail "an extended-headers case failed (see above)"
kill -0 "$pid" 2>/dev/null || fail "server pid $pid is gone at the end"
