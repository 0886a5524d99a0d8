#!/usr/bin/env bash
# Adaptive polling follows the clients: while they keep requests in flight
# (nbdcopy, 4 connections x 64 requests) a loop holds its polling, and it
# polls again once a client sends one request at a time (nbdsh, pread after
# pread).  The transitions are logged at debug level; both must appear, in
# that order.  Also checks the data nbdcopy wrote, read back one 4 KiB
# request at a time.
source "${srcdir:-.}/functions.sh"
requires_prog nbdcopy
requires_prog nbdsh
make_tmpdir
export tmp

head -c $((8*1024*1024)) /dev/urandom > "$tmp/src"
cat > "$tmp/qd1.py" <<'PY'
import os
h.connect_uri(os.environ["uri"])
src = open(os.environ["tmp"] + "/src", "rb").read()
for off in range(0, len(src), 4096):
    assert h.pread(4096, off) == src[off:off + 4096], off
PY
$UBDKIT serve -v -t 1 -U - --run '
    nbdcopy --request-size=4096 "$tmp/src" "$uri" &&
    nbdsh -c "exec(open(\"$tmp/qd1.py\").read())"' \
  memory size=8M 2> "$tmp/log" || { cat "$tmp/log"; fail "nbdcopy or the QD1 read-back failed"; }

held=$(grep -n 'polling held' "$tmp/log" | head -1 | cut -d: -f1)
resumed=$(grep -n 'polling resumed' "$tmp/log" | tail -1 | cut -d: -f1)
[ -n "$held" ] || { cat "$tmp/log"; fail "nbdcopy's pipelined requests did not hold polling"; }
[ -n "$resumed" ] && [ "$resumed" -gt "$held" ] ||
  { cat "$tmp/log"; fail "one request at a time did not resume polling after the hold"; }
echo "ok - polling held for nbdcopy (log line $held), resumed for one request at a time (line $resumed)"

# With --poll 0 there is nothing to hold, and nothing is said.
$UBDKIT serve -v -t 1 --poll 0 -U - --run 'nbdcopy --request-size=4096 "$tmp/src" "$uri"' \
  memory size=8M 2> "$tmp/log0" || { cat "$tmp/log0"; fail "nbdcopy with --poll 0 failed"; }
! grep -q 'polling held' "$tmp/log0" || fail "--poll 0: a hold was logged"
echo "ok - --poll 0: no hold"
