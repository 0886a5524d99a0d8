#!/usr/bin/env bash
# Adaptive polling follows the clients: while they keep requests in flight
# a loop holds its polling, and it polls again once a client sends one
# request at a time (nbdsh, pread after pread).  The transitions are logged
# at debug level; both must appear, in that order.
#
# The pipelining client is a raw one that writes 512 read requests in one
# sendall before it reads a reply: the server parses them with earlier
# replies still in flight however the two are scheduled.  (nbdcopy's
# pipelining depends on the scheduler: on a loaded 2-core machine the
# server could answer each request before the next arrived, and the hold
# was then rightly not taken.)  nbdcopy still writes the data, which the
# QD1 pass reads back 4 KiB at a time.
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
cat > "$tmp/burst.py" <<'PY'
import os, struct, sys
sys.path.insert(0, os.environ["srcdir"])
import nbdraw
src = open(os.environ["tmp"] + "/src", "rb").read()
n = 512
with nbdraw.Conn(os.environ["unixsocket"]).open() as c:
    c.send(b"".join(
        struct.pack(">IHHQQI", nbdraw.REQUEST_MAGIC, 0,
                                  nbdraw.CMD_READ, i, (i * 4096) % len(src),
                                  4096) for i in range(n)))
    seen = set()
    for _ in range(n):
        err, h, data = c.recv_reply(4096)
        assert err == 0 and h not in seen, (err, h)
        assert data == src[(h * 4096) % len(src):][:4096], h
        seen.add(h)
PY
export srcdir
$UBDKIT serve -v -t 1 -U - --run '
    nbdcopy --request-size=4096 "$tmp/src" "$uri" &&
    "$PYTHON" "$tmp/burst.py" &&
    nbdsh -c "exec(open(\"$tmp/qd1.py\").read())"' \
  memory size=8M 2> "$tmp/log" || { cat "$tmp/log"; fail "nbdcopy, the burst or the QD1 read-back failed"; }

held=$(grep -n 'polling held' "$tmp/log" | head -1 | cut -d: -f1)
resumed=$(grep -n 'polling resumed' "$tmp/log" | tail -1 | cut -d: -f1)
[ -n "$held" ] || { cat "$tmp/log"; fail "512 pipelined requests did not hold polling"; }
[ -n "$resumed" ] && [ "$resumed" -gt "$held" ] ||
  { cat "$tmp/log"; fail "one request at a time did not resume polling after the hold"; }
echo "ok - polling held for 512 pipelined requests (log line $held), resumed for one request at a time (line $resumed)"

# With --poll 0 there is nothing to hold, and nothing is said.
$UBDKIT serve -v -t 1 --poll 0 -U - --run '
    nbdcopy --request-size=4096 "$tmp/src" "$uri" && "$PYTHON" "$tmp/burst.py"' \
  memory size=8M 2> "$tmp/log0" || { cat "$tmp/log0"; fail "nbdcopy with --poll 0 failed"; }
! grep -q 'polling held' "$tmp/log0" || fail "--poll 0: a hold was logged"
echo "ok - --poll 0: no hold"
