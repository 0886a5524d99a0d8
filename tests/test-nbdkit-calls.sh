#!/usr/bin/env bash
# The order in which ubdkit calls an nbdkit plugin's callbacks, as nbdkit
# does: config..., config_complete, thread_model, get_ready, after_fork;
# then per connection preconnect, default_export, open (seeing the name
# default_export chose), get_size, every can_* once (cached
# for that connection), the data callbacks, close; at exit cleanup,
# unload.  An sh plugin implements every callback and logs each with the
# handle it got.  Two connections one after the other and two at the same
# time must each get their own handle; with SERIALIZE_CONNECTIONS the
# second of two concurrent clients waits until the first one's close.
# preconnect runs before the NBD greeting (and a refusal drops just that
# client); NBD_OPT_LIST answers with the plugin's list_exports (or
# default_export through nbdkit_use_default_export), refused with
# NBD_REP_ERR_TOO_BIG when it does not fit; a listed name reaches open.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires $NBDSH -c pass
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
make_tmpdir
export tmp

truncate -s 1M "$tmp/data"
cat > "$tmp/all.sh" <<'SH'
#!/bin/sh
f="$tmp/data"
case "$1" in
  config|config_complete|get_ready|after_fork|preconnect|cleanup|unload|\
  thread_model|dump_plugin|default_export|list_exports)
    echo "$1" >> "$tmp/calls" ;;
  open) echo "open h$$ $3" >> "$tmp/calls" ;;
  *) echo "$1 $2" >> "$tmp/calls" ;;
esac
case "$1" in
  config|config_complete|get_ready|after_fork|close|cleanup) ;;
  preconnect) [ ! -e "$tmp/refuse" ] || { echo "go away" >&2; exit 1; } ;;
  list_exports)
    case "$(cat "$tmp/listmode" 2>/dev/null)" in
      default) exit 2 ;;        # missing: nbdkit_use_default_export
      big) echo NAMES
           for i in 1 2 3; do printf "%04000d\n" $i; done ;;
      *) printf 'INTERLEAVED\ncanonical\nthe default\nsecond\nanother one\n' ;;
    esac ;;
  unload|dump_plugin) ;;
  thread_model) echo "$MODEL" ;;
  open) echo "h$$" ;;
  default_export) echo canonical ;;
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

# Every data callback on handle h, then two sequential connections, then
# two concurrent ones (the second connecting asynchronously: with
# SERIALIZE_CONNECTIONS it must still be negotiating while the first is
# open, and finish once the first closed).
cat > "$tmp/client.py" <<'PY'
import nbd, os, sys, time
uri = os.environ["uri"]
def conn():
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    return h
def exercise(h):
    h.pwrite(b"x" * 512, 0, nbd.CMD_FLAG_FUA)
    assert h.pread(512, 0) == b"x" * 512
    h.flush()
    h.trim(512, 4096)
    h.zero(512, 8192)
    h.cache(512, 0)
    h.block_status(4096, 0, lambda *a: 0)
for i in range(2):                      # sequential
    h = conn(); exercise(h); h.shutdown(); del h
a = conn()                              # concurrent
b = nbd.NBD()
b.add_meta_context("base:allocation")
b.aio_connect_uri(uri)
# Parallel: b connects while a is open.  Serialized: b is still
# negotiating 2 s later (its open, were it to run, takes well under that).
serialized = os.environ["MODEL"] == "serialize_connections"
end = time.monotonic() + (2 if serialized else 60)
while b.aio_is_connecting() and time.monotonic() < end:
    b.poll(100)
waited = b.aio_is_connecting()
assert waited == serialized, waited
exercise(a)
if not waited:
    exercise(b)
a.shutdown(); del a
while b.aio_is_connecting():
    b.poll(1000)
exercise(b)
b.shutdown(); del b
PY

check_calls () {
  "$PYTHON" - "$tmp/calls" "$MODEL" <<'PY'
import sys
calls = [l.split() for l in open(sys.argv[1])]
model = sys.argv[2]
names = [c[0] for c in calls]
def first(c): return names.index(c)
def last(c): return len(names) - 1 - names[::-1].index(c)
setup = ["config", "config_complete", "thread_model", "get_ready",
         "after_fork", "preconnect", "open"]
assert names.count("config") == 2, "config once per key=value"
for a, b in zip(setup, setup[1:]):
    assert last(a) < first(b) if a != "preconnect" else first(a) < first(b), (a, b)
handles = [c[1] for c in calls if c[0] == "open"]
assert len(handles) == 4 and len(set(handles)) == 4, ("one open per connection", handles)
# The client asks for "": the plugin's default_export names it, and open
# (the sh plugin passes nbdkit_export_name) sees that name.
assert all(c[2:] == ["canonical"] for c in calls if c[0] == "open"), "export name"
pre, dflt, opens = ([i for i, n in enumerate(names) if n == c]
                    for c in ("preconnect", "default_export", "open"))
assert len(pre) == len(dflt) == 4, "preconnect, default_export per connection"
for p, d, o in zip(pre, dflt, opens):
    assert p < d < o, "preconnect, default_export, open"
caps = ("can_write", "can_flush", "can_fua", "can_multi_conn", "can_cache",
        "can_extents", "can_trim", "can_zero", "can_fast_zero", "is_rotational")
data = ("pwrite", "pread", "flush", "trim", "zero", "cache", "extents")
for h in handles:
    mine = [(i, c[0]) for i, c in enumerate(calls) if c[1:] == [h]]
    where = {}
    for i, c in mine:
        where.setdefault(c, []).append(i)
    opened = calls.index(["open", h, "canonical"])
    assert len(where["close"]) == 1, (h, "close once")
    assert len(where["get_size"]) == 1, (h, "get_size once")
    for c in caps:
        assert len(where.get(c, [])) == 1, (h, c, "not asked exactly once")
    asked = max(where[c][0] for c in caps + ("get_size",))
    for c in data:
        assert c in where, (h, c, "never called")
        assert opened < asked < min(where[c]), (h, c, "before the queries")
        assert max(where[c]) < where["close"][0], (h, c, "after close")
# Connections 1 and 2 follow each other; 3 and 4 overlap, except that
# with SERIALIZE_CONNECTIONS the fourth opens only after the third closed.
close = lambda h: calls.index(["close", h])
openi = lambda h: calls.index(["open", h, "canonical"])
assert close(handles[0]) < openi(handles[1]), "sequential connections"
if model == "serialize_connections":
    for x, y in zip(handles, handles[1:]):
        assert close(x) < openi(y), ("one connection at a time", x, y)
else:
    assert openi(handles[3]) < close(handles[2]), "concurrent connections"
assert max(close(h) for h in handles) < first("unload")
assert names[-1] == "unload", names[-3:]
if "cleanup" in names:
    assert max(close(h) for h in handles) < first("cleanup") < first("unload")
PY
}

for MODEL in parallel serialize_connections; do
  export MODEL
  rm -f "$tmp/calls"
  $UBDKIT serve -U - nbdkit:sh "$tmp/all.sh" a=1 b=2 \
      --run '"$PYTHON" "$tmp/client.py"' 2>"$tmp/err" ||
    fail "$MODEL: serving the sh plugin failed: $(cat "$tmp/err")"
  check_calls || fail "$MODEL: wrong call order: $(tr '\n' ' ' < "$tmp/calls")"
  echo "$0: $MODEL: $(grep -c . "$tmp/calls") calls, handles" \
       $(grep '^open' "$tmp/calls" | cut -d' ' -f2)
done

# preconnect before the greeting, and list_exports.
cat > "$tmp/early.py" <<'PY'
import json, nbd, os, socket, subprocess
tmp, uri, path = os.environ["tmp"], os.environ["uri"], os.environ["unixsocket"]
def preconnects():
    return open(tmp + "/calls").read().split("\n").count("preconnect")
def greeting():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(60)
    data = b""
    while len(data) < 18:
        d = s.recv(18 - len(data))
        if not d:
            break
        data += d
    s.close()
    return data
# The greeting comes after preconnect ran (no option sent yet) ...
n = preconnects()
assert greeting()[:8] == b"NBDMAGIC"
assert preconnects() == n + 1, "greeting before preconnect"
# ... and not at all when it refuses; the next client is served.
open(tmp + "/refuse", "w").close()
assert greeting() == b"", "greeting despite a refusing preconnect"
assert subprocess.run(["nbdinfo", uri], capture_output=True).returncode != 0
os.unlink(tmp + "/refuse")
h = nbd.NBD(); h.connect_uri(uri); h.pread(512, 0); h.shutdown()
def listing():
    out = json.loads(subprocess.check_output(["nbdinfo", "--list", "--json",
                                              uri]))
    return [(e["export-name"], e.get("description")) for e in out["exports"]]
got = listing()
assert got == [("canonical", "the default"), ("second", "another one")], got
# A listed name reaches open (and nbdkit_export_name).
h = nbd.NBD()
h.connect_uri(uri.replace("///?", "///second?"))
h.pread(512, 0)
h.shutdown()
last_open = [l for l in open(tmp + "/calls") if l.startswith("open ")][-1]
assert last_open.split()[2:] == ["second"], last_open
open(tmp + "/listmode", "w").write("default")
got = listing()
assert got == [("canonical", None)], got
open(tmp + "/listmode", "w").write("big")
r = subprocess.run(["nbdinfo", "--list", uri], capture_output=True)
assert r.returncode != 0, "12 KB of names fitted in a 10 KB reply buffer"
os.unlink(tmp + "/listmode")
assert len(listing()) == 2
PY
export MODEL=parallel
rm -f "$tmp/calls"
$UBDKIT serve -U - nbdkit:sh "$tmp/all.sh" \
    --run '"$PYTHON" "$tmp/early.py"' 2>"$tmp/err" ||
  fail "preconnect or list_exports: $(cat "$tmp/err")"
grep -q 'the backend refused the connection (preconnect)' "$tmp/err" ||
  fail "no log line for the refused client: $(cat "$tmp/err")"
grep -q "NBD_OPT_LIST: the backend's exports do not fit" "$tmp/err" ||
  fail "no log line for the list too big: $(cat "$tmp/err")"
