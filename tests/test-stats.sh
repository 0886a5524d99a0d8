#!/usr/bin/env bash
# The request counters of `ubdkit serve --control` and `ubdkit stats`:
# known I/O from nbdsh (N reads of B bytes, one read larger than a slot's
# buffer, M writes, a flush, a trim, a zero, a cache, a block status, a
# read past the end, a write-zeroes with a flag it does not take) must
# show up exactly, per export, in the JSON (which must parse) and in the
# text; one request slot and pipelined reads count pool waits;
# a remote backend whose server restarts counts a reconnect;
# UBDKIT_STATS=off keeps the counters at zero; bad targets get clear
# errors.
source "${srcdir:-.}/functions.sh"
requires $NBDSH -c pass
make_tmpdir
export tmp

ctl=$tmp/ctl
start_server sock pid --control "$ctl" -E 'second memory size=1M' \
  memory size=16M
# wait_socket PATH: the control socket comes up after the NBD one.
wait_socket () {
  local i
  for (( i=0; i<200; i++ )); do
    [ -S "$1" ] && return 0
    sleep 0.05
  done
  fail "--control did not create $1"
}
wait_socket "$ctl"
export sock UBDKIT ctl

cat > "$tmp/io.py" <<'PY'
import json, os, subprocess, time

def stats():
    out = subprocess.run([os.environ["UBDKIT"], "stats", "--json",
                          os.environ["ctl"]], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)

def settled():
    # Replies reach the client before their slot is released: wait for
    # every connection to be closed.
    for _ in range(200):
        s = stats()
        if s["connections"]["current"] == 0:
            return s
        time.sleep(0.05)
    raise AssertionError("connections still open: %r" % s["connections"])

def connect(name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_unix(os.environ["sock"])
    return h

N, B, M, W = 7, 65536, 5, 12288
h = connect("")
for i in range(N):
    h.pread(B, i * B)
h.pread(3 << 20, 0)                 # three slots' worth: one request
for i in range(M):
    h.pwrite(os.urandom(W), i * W)
h.flush()
h.trim(8192, 0)
h.zero(4096, 1 << 20)
h.cache(4096, 0)
h.block_status(65536, 0, lambda *a: 0)
# Past the end: libnbd would refuse it itself without this.
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
try:
    h.pread(4096, 16 << 20)
    raise AssertionError("a read past the end succeeded")
except nbd.Error:
    pass
# A command type the server does not know (strict mode off for it too).
h.set_strict_mode(0)
try:
    h.zero(4096, 0, nbd.CMD_FLAG_DF)     # DF is not valid on WRITE_ZEROES
    raise AssertionError("WRITE_ZEROES with DF succeeded")
except nbd.Error:
    pass
h.shutdown()

g = connect("second")
g.pwrite(b"y" * 512, 0)
g.shutdown()

s = settled()
assert s["kind"] == "serve" and s["enabled"] is True, s
assert s["connections"] == {"current": 0, "total": 2}, s["connections"]
e = {x["name"]: x for x in s["exports"]}
assert set(e) == {"", "second"}, e.keys()
assert e[""]["backend"] == "memory"
c = e[""]["counters"]
want_req = {"read": N + 2, "write": M, "flush": 1, "trim": 1, "zero": 2,
            "cache": 1, "block_status": 1, "other": 0}
want_bytes = {"read": N * B + (3 << 20) + 4096, "write": M * W, "flush": 0,
              "trim": 8192, "zero": 8192, "cache": 4096,
              "block_status": 65536, "other": 0}
want_err = {"read": 1, "write": 0, "flush": 0, "trim": 0, "zero": 1,
            "cache": 0, "block_status": 0, "other": 0}
assert c["requests"] == want_req, c["requests"]
assert c["bytes"] == want_bytes, c["bytes"]
assert c["errors"] == want_err, c["errors"]
assert c["in_flight"] == 0 and c["reconnects"] == 0, c
assert isinstance(c["pool_waits"], int)
c2 = e["second"]["counters"]
assert c2["requests"]["write"] == 1 and c2["bytes"]["write"] == 512, c2
assert sum(c2["requests"].values()) == 1 and sum(c2["errors"].values()) == 0
print("counters match")
PY
$NBDSH -c "exec(open('$tmp/io.py').read())" || fail "counters are wrong"

# The JSON parses with the stock parser, and the text says the same.
"$UBDKIT" stats --json "$ctl" | python3 -c 'import json, sys; json.load(sys.stdin)' ||
  fail "ubdkit stats --json is not JSON"
text=$("$UBDKIT" stats "$ctl")
echo "$text"
grep -q "^connections: 0 open, 2 in total$" <<<"$text" || fail "text: connections"
grep -Eq "^  read +9 +$(( 7 * 65536 + (3 << 20) + 4096 )) +1$" <<<"$text" ||
  fail "text: the read line"
grep -q "^export 'second' (memory):$" <<<"$text" || fail "text: second export"

# Errors: a target that is not there, a control path that is a file, no
# target, a request the control socket does not know.
out=$("$UBDKIT" stats "$tmp/nonesuch" 2>&1) && fail "stats of a missing socket succeeded"
grep -q "nonesuch: No such file" <<<"$out" || fail "missing socket: '$out'"
set +e
"$UBDKIT" stats >/dev/null 2>&1; [ $? = 2 ] || fail "stats without a target: not a usage error"
set -e
touch "$tmp/file"
out=$("$UBDKIT" serve -U "$tmp/s2" --control "$tmp/file" memory size=1M 2>&1) &&
  fail "--control on a regular file succeeded"
grep -q "exists and is not a socket" <<<"$out" || fail "--control file: '$out'"
reply=$(python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"bogus\n"); print(s.makefile().read().strip())' "$ctl")
[ "$reply" = "error unknown request 'bogus' (try \"stats\")" ] ||
  fail "unknown request: '$reply'"

# Backpressure: one slot, sixteen reads sent at once: the server takes
# them from one recv, the first reply is queued to go out after the
# batch, and the second request must wait for the slot (its connection's
# fair share of the pool).
start_server sock3 pid3 --control "$tmp/ctl3" --threads 1 --depth 1 \
  memory size=1M
wait_socket "$tmp/ctl3"
$NBDSH -u "nbd+unix:///?socket=$sock3" -c '
cookies = [h.aio_pread(nbd.Buffer(4096), i * 4096) for i in range(16)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    h.aio_command_completed(c)'
"$UBDKIT" stats --json "$tmp/ctl3" | python3 -c 'import json, sys
c = json.load(sys.stdin)["exports"][0]["counters"]
assert c["requests"]["read"] == 16, c
assert c["pool_waits"] >= 1, c' || fail "no pool wait counted with one slot"

# Reconnects of the remote backend: a proxy to a file server that is
# killed and started again counts one.
if $UBDKIT --help 2>&1 | grep -q '^  nbd '; then
  truncate -s 4M "$tmp/rdisk"
  rsock=$tmp/remote.sock
  rpid=
  cleanup_fn 'kill -9 $rpid 2>/dev/null'
  start_remote () {
    rm -f "$rsock"
    $UBDKIT serve -U "$rsock" file file="$tmp/rdisk" 2>>"$tmp/remote.log" &
    rpid=$!
    for (( i=0; i<200; i++ )); do
      $NBDSH -u "nbd+unix:///?socket=$rsock" -c pass 2>/dev/null && return
      sleep 0.05
    done
    fail "the remote did not start"
  }
  start_remote
  start_server psock ppid --control "$tmp/pctl" nbd \
    uri="nbd+unix:///?socket=$rsock" connections=1 retry=50 retry-delay=0.1
  wait_socket "$tmp/pctl"
  $NBDSH -u "nbd+unix:///?socket=$psock" -c 'h.pread(4096, 0)'
  kill -9 $rpid; wait $rpid 2>/dev/null || true
  start_remote
  $NBDSH -u "nbd+unix:///?socket=$psock" -c 'h.pread(4096, 4096)' ||
    fail "the proxy does not serve after the remote came back"
  n=
  for (( i=0; i<100; i++ )); do
    n=$("$UBDKIT" stats --json "$tmp/pctl" | python3 -c 'import json, sys
print(json.load(sys.stdin)["exports"][0]["counters"]["reconnects"])')
    [ "$n" = 1 ] && break
    sleep 0.1
  done
  [ "$n" = 1 ] || fail "reconnects is '$n', not 1"
else
  echo "built without libnbd: reconnects not tested"
fi

# Switched off: the socket answers, the counters stay at zero.
UBDKIT_STATS=off start_server sock2 pid2 --control "$tmp/ctl2" memory size=1M
wait_socket "$tmp/ctl2"
$NBDSH -u "nbd+unix:///?socket=$sock2" -c 'h.pread(512, 0)'
"$UBDKIT" stats --json "$tmp/ctl2" | python3 -c 'import json, sys
s = json.load(sys.stdin)
assert s["enabled"] is False, s
c = s["exports"][0]["counters"]
assert sum(c["requests"].values()) == 0, c' || fail "UBDKIT_STATS=off still counts"

# The server removes its control socket when it exits.
kill "$pid"; wait "$pid" 2>/dev/null || true
[ ! -e "$ctl" ] || fail "$ctl left behind"
echo ok
