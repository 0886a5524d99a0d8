#!/usr/bin/env bash
# A backend call that hangs holds only its own worker, never the requests
# queued behind it.  The worker pool wakes only as many workers as the
# queue needs at the backend time requests have been taking
# (lib/core/workers.c), so after thousands of fast reads it keeps few
# workers up; then one read hangs (tests/nbdkit-stall-plugin.c: 5 s), and
# the reads sent after it, from the same connection and from a second
# one, must all be answered while it still hangs.  With one worker only
# they wait for it, and must be answered once it returns.
source "${srcdir:-.}/functions.sh"
requires $NBDSH -c pass
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
plugin=$(cd "${builddir:-.}" && pwd)/nbdkit-stall-plugin.so
[ -f "$plugin" ] || fail "$plugin was not built (make check builds it)"
make_tmpdir
export tmp

cat > "$tmp/client.py" <<'PY'
import nbd, os, sys
uri = os.environ["uri"]
workers = int(sys.argv[1])
h = nbd.NBD(); h.connect_uri(uri)
h2 = nbd.NBD(); h2.connect_uri(uri)

def run(handle, offsets, depth=8):
    """Reads at OFFSETS, DEPTH in flight; returns when all are answered."""
    todo = list(offsets)
    cookies = set()
    while todo or cookies:
        while todo and len(cookies) < depth:
            cookies.add(handle.aio_pread(nbd.Buffer(4096), todo.pop()))
        handle.poll(-1)
        for c in list(cookies):
            if handle.aio_command_completed(c):
                cookies.discard(c)

# Train: fast reads from both connections.
run(h, [4096 * (1 + i % 255) for i in range(4000)])
run(h2, [4096 * (1 + i % 255) for i in range(1000)])

buf = nbd.Buffer(4096)
stall = h.aio_pread(buf, 0)
# Give the stalled read time to reach its worker before the others.
import time; time.sleep(0.2)
assert not h.aio_command_completed(stall)
run(h, [4096 * (1 + i % 255) for i in range(200)])
run(h2, [4096 * (1 + i % 255) for i in range(200)])
pending = not h.aio_command_completed(stall)
if workers > 1:
    assert pending, "the reads behind the stalled one waited for it"
    print("%d workers: 400 reads answered while one read hung" % workers)
else:
    print("1 worker: the reads behind the stalled one waited for it (%s)" %
          ("it still hung" if pending else "it had returned"))
# aio_command_completed retires the command once it says true.
while pending and not h.aio_command_completed(stall):
    h.poll(-1)
assert buf.to_bytearray() == bytearray(4096)
h.shutdown(); h2.shutdown()
PY

for w in 8 2 1; do
  $UBDKIT serve -U "$tmp/sock" --workers $w "nbdkit:$plugin" stall-ms=5000 \
      --run '"$PYTHON" "$tmp/client.py" '$w 2>"$tmp/err" ||
    fail "--workers $w: $(cat "$tmp/err")"
  echo "ok - --workers $w"
done
