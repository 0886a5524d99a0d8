#!/usr/bin/env bash
# The order in which ubdkit calls an nbdkit plugin's callbacks, as nbdkit
# does: config..., config_complete, thread_model, get_ready, after_fork,
# preconnect, open, get_size, every can_* once, the data callbacks, close,
# cleanup, unload.  An sh plugin implements every callback and logs each.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires $NBDSH -c pass
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
make_tmpdir
export tmp

truncate -s 1M "$tmp/data"
cat > "$tmp/all.sh" <<'SH'
#!/bin/sh
echo "$1" >> "$tmp/calls"
f="$tmp/data"
case "$1" in
  config|config_complete|get_ready|after_fork|preconnect|close|cleanup) ;;
  unload|dump_plugin) ;;
  thread_model) echo parallel ;;
  open) echo handle1 ;;
  get_size) echo 1M ;;
  can_write|can_flush|can_trim|can_zero|can_extents|can_fast_zero) exit 0 ;;
  can_multi_conn) exit 0 ;;
  is_rotational) exit 3 ;;
  can_fua|can_cache) echo native ;;
  pread) dd if="$f" skip="$4" count="$3" iflag=skip_bytes,count_bytes status=none ;;
  pwrite) dd of="$f" seek="$4" oflag=seek_bytes conv=notrunc status=none ;;
  flush|trim|zero|cache) ;;
  extents) echo "$4 $3 data" ;;
  *) exit 2 ;;
esac
SH
chmod +x "$tmp/all.sh"

$UBDKIT serve -U - nbdkit:sh "$tmp/all.sh" a=1 b=2 --run '$NBDSH --base-allocation -u "$uri" -c "
h.pwrite(b\"x\" * 512, 0, nbd.CMD_FLAG_FUA)
assert h.pread(512, 0) == b\"x\" * 512
h.flush()
h.trim(512, 4096)
h.zero(512, 8192)
h.cache(512, 0)
h.block_status(4096, 0, lambda *a: 0)
"' 2>"$tmp/err" || fail "serving the sh plugin failed: $(cat "$tmp/err")"

"$PYTHON" - "$tmp/calls" <<'PY' || fail "wrong call order: $(tr '\n' ' ' < "$tmp/calls")"
import sys
calls = [l.strip() for l in open(sys.argv[1])]
def first(c): return calls.index(c)
def last(c): return len(calls) - 1 - calls[::-1].index(c)
setup = ["config", "config_complete", "thread_model", "get_ready",
         "after_fork", "preconnect", "open", "get_size"]
assert calls.count("config") == 2, "config once per key=value"
for a, b in zip(setup, setup[1:]):
    assert last(a) < first(b), (a, b)
caps = [c for c in calls if c.startswith("can_") or c == "is_rotational"]
for c in set(caps):
    assert caps.count(c) == 1, c + " asked more than once"
for c in ("can_write", "can_flush", "can_fua", "can_multi_conn", "can_cache",
          "can_extents", "can_trim", "can_zero", "can_fast_zero"):
    assert c in caps, c + " never asked"
data = ["pwrite", "pread", "flush", "trim", "zero", "cache", "extents"]
for c in data:
    assert first("get_size") < first(c), c
    assert max(last(x) for x in caps) < first(c), c
    assert last(c) < first("close"), c
assert first("close") < first("unload") and calls[-1] == "unload", calls[-3:]
if "cleanup" in calls:
    assert first("close") < first("cleanup") < first("unload")
PY
echo "$0: $(tr '\n' ' ' < "$tmp/calls")"
