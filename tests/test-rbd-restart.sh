#!/usr/bin/env bash
# The cluster's daemons killed and restarted under a writing client: I/O
# waits, resumes, and nothing acknowledged is lost.  A client keeps 16 FUA
# writes in flight through ubdkit serve rbd, each block holding its own
# number; the OSD is killed with SIGKILL (a crash) mid-run and started again
# after two seconds, then the monitor the same way; the writes go on after
# each.  Every acknowledged block is then read back, through a new ubdkit
# and through `rbd export`.  The OSD keeps its objects in bluestore on a
# sparse file: memstore would lose them all on a restart.
source "${srcdir:-.}/functions.sh"
source "$srcdir/ceph/functions.sh"
requires_ceph
requires $NBDSH -c pass
requires_prog nbdcopy
make_tmpdir
export tmp

start_ceph --store bluestore
rbd create --size 64M rbd/img
start_server sock pid rbd pool=rbd image=img
uri="nbd+unix:///?socket=$sock"

# The writer: block i (4 KiB, of 16384) holds i, over and over; it reports
# the blocks acknowledged in $tmp/acked (the count, rewritten as it goes)
# and stops once $tmp/stop exists and nothing is in flight.  A write that
# fails fails the writer.
"$PYTHON" - "$uri" "$tmp" <<'PY' > "$tmp/writer.out" 2>&1 &
import nbd, os, sys, time
uri, tmp = sys.argv[1:]
h = nbd.NBD()
h.connect_uri(uri)
BS, N = 4096, 16384
def block(i):
    return (b"%08d" % i).ljust(BS, b"-")
inflight, acked, nxt, slowest = {}, 0, 0, 0.0
while True:
    stop = os.path.exists(tmp + "/stop")
    while not stop and len(inflight) < 16:
        buf = nbd.Buffer.from_bytearray(bytearray(block(nxt % N)))
        c = h.aio_pwrite(buf, (nxt % N) * BS, flags=nbd.CMD_FLAG_FUA)
        inflight[c] = (buf, time.monotonic())
        nxt += 1
    if not inflight:
        break
    h.poll(100)
    for c in list(inflight):
        if h.aio_command_completed(c):      # raises if the write failed
            slowest = max(slowest, time.monotonic() - inflight.pop(c)[1])
            acked += 1
    with open(tmp + "/acked.new", "w") as f:
        f.write("%d\n" % acked)
    os.rename(tmp + "/acked.new", tmp + "/acked")
print("acked %d writes, the slowest in %.1f s" % (acked, slowest))
with open(tmp + "/final", "w") as f:
    f.write("%d %.1f\n" % (acked, slowest))
PY
writer=$!
cleanup_fn "kill $writer 2>/dev/null"

acked () { cat "$tmp/acked" 2>/dev/null || echo 0; }
# wait_acked N: until N writes were acknowledged (60 s at most).
wait_acked () {
  local i
  for (( i=0; i<600; i++ )); do
    [ "$(acked)" -ge "$1" ] && return 0
    kill -0 $writer 2>/dev/null || { cat "$tmp/writer.out"; fail "the writer died"; }
    sleep 0.1
  done
  fail "only $(acked) writes acknowledged, waiting for $1"
}

# kill_restart DAEMON: kill it mid-run, two seconds down, start it again;
# writes acknowledged after the restart show I/O resumed.
kill_restart () {
  local before during
  wait_acked $(( $(acked) + 300 ))
  ceph_cluster kill-$1
  before=$(acked)
  sleep 2
  during=$(( $(acked) - before ))
  ceph_cluster start-$1 2>/dev/null
  wait_acked $(( $(acked) + 300 ))
  echo "$1 killed after $before writes; $during acknowledged while it was" \
    "down; restarted; $(acked) now"
}
kill_restart osd
kill_restart mon

touch "$tmp/stop"
wait $writer || { cat "$tmp/writer.out"; fail "the writer failed"; }
read -r total slowest < "$tmp/final"
kill $pid; wait $pid || fail "ubdkit serve rbd exited with $?"
echo "writer: $total FUA writes acknowledged, the slowest in $slowest s"

# Every acknowledged block holds its number (a block written again holds
# the same), read through a new server and by rbd export.
check () {
  "$PYTHON" - "$1" "$total" <<'PY' || fail "$2: an acknowledged write is lost"
import sys
data, total = open(sys.argv[1], "rb").read(), int(sys.argv[2])
BS, N = 4096, 16384
bad = [i for i in range(min(total, N))
       if data[i * BS:(i + 1) * BS] != (b"%08d" % i).ljust(BS, b"-")]
if bad:
    print("blocks not as acknowledged: %d, first %s" % (len(bad), bad[:8]))
    sys.exit(1)
PY
}
start_server sock pid rbd pool=rbd image=img
nbdcopy "nbd+unix:///?socket=$sock" "$tmp/back" || fail "nbdcopy"
check "$tmp/back" "read back through ubdkit"
rbd export rbd/img "$tmp/exp" >/dev/null 2>&1 || fail "rbd export"
check "$tmp/exp" "rbd export"
echo "all $total acknowledged writes read back, through ubdkit and rbd export"
