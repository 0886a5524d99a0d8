#!/usr/bin/env bash
# nbdsh drives every NBD command against a memory disk and checks the data
# against a local model: pwrite/pread patterns, FUA, flush, trim, zero,
# cache, block_status, and errors for out-of-range and read-only writes.
source "${srcdir:-.}/functions.sh"
requires $NBDSH -c pass
make_tmpdir
export tmp

cat > "$tmp/check.py" <<'PY'
import os
M = 1 << 20
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(os.environ["uri"])
size = h.get_size()
assert size == 64 * M, size
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
for f in ("can_flush", "can_trim", "can_zero", "can_fua", "can_cache"):
    assert getattr(h, f)(), f + " is false"

model = bytearray(size)
def write(off, data, flags=0):
    h.pwrite(data, off, flags)
    model[off:off + len(data)] = data
def check(off, n, what):
    got = h.pread(n, off)
    assert got == model[off:off + n], "%s: mismatch in [%d,+%d)" % (what, off, n)

check(0, 4 * M, "fresh disk is not zero")

# Patterns at aligned, unaligned, boundary-crossing and end-of-disk offsets.
for off, n in [(0, 4096), (4095, 3), (M - 100, 200), (3 * M - 1, 2),
               (8 * M, M), (10 * M + 17, 3 * M + 5), (size - 512, 512)]:
    write(off, os.urandom(n))
    check(off, n, "pwrite/pread")
check(0, 16 * M, "after patterns")

write(12 * M + 4096, os.urandom(65536), nbd.CMD_FLAG_FUA)
check(12 * M, M, "FUA write")
h.flush()

h.trim(2 * M, 8 * M)
model[8 * M:10 * M] = bytes(2 * M)
check(8 * M, 2 * M, "trim then read")

h.zero(100, 4095)
model[4095:4195] = bytes(100)
h.zero(M, 20 * M, nbd.CMD_FLAG_NO_HOLE)
model[20 * M:21 * M] = bytes(M)
h.zero(4 * M, 24 * M, nbd.CMD_FLAG_FUA)
model[24 * M:28 * M] = bytes(4 * M)
check(0, 32 * M, "zero")

h.cache(4 * M, 8 * M)

# block_status: data at [40M,41M), trimmed hole at [44M,48M).
write(40 * M, os.urandom(M))
h.trim(4 * M, 44 * M)
model[44 * M:48 * M] = bytes(4 * M)
ext = []
def cb(ctx, off, entries, err):
    if ctx == nbd.CONTEXT_BASE_ALLOCATION:
        pos = off
        for i in range(0, len(entries), 2):
            ext.append((pos, entries[i], entries[i + 1]))
            pos += entries[i]
    return 0
pos = 40 * M
while pos < 48 * M:
    n = len(ext)
    h.block_status(48 * M - pos, pos, cb)
    assert len(ext) > n, "block_status returned no extents at %d" % pos
    pos = ext[-1][0] + ext[-1][1]
for off, n, flags in ext:
    for lo, hi, want_data in [(40 * M, 41 * M, True), (44 * M, 48 * M, False)]:
        if off < hi and off + n > lo:
            is_data = (flags & (nbd.STATE_HOLE | nbd.STATE_ZERO)) == 0
            assert is_data == want_data, "block_status %r" % ext

for off in range(0, size, 8 * M):
    check(off, 8 * M, "final full read")

# Out-of-range requests must be rejected by the server (client checks off).
h.set_strict_mode(0)
for op in (lambda: h.pread(512, size), lambda: h.pwrite(b"x" * 512, size - 256),
           lambda: h.zero(4096, size)):
    try:
        op()
    except nbd.Error:
        pass
    else:
        raise AssertionError("out-of-range request succeeded")
check(size - 512, 512, "tail after rejected write")

# Requests over the 64 MiB maximum (nbdkit's) fail but leave the
# connection usable; 64 MiB itself works, also as one DF (unfragmented)
# chunk.
big = os.urandom(64 * M)
for op in (lambda: h.pread(64 * M + 4096, 0),
           lambda: h.pwrite(os.urandom(64 * M + 4096), 0)):
    try:
        op()
    except nbd.Error:
        pass
    else:
        raise AssertionError("request over 64 MiB succeeded")
check(0, 8 * M, "after oversized requests")
write(0, big)                   # the whole disk
check(0, 64 * M, "64 MiB read")
assert h.pread(64 * M, 0, nbd.CMD_FLAG_DF) == big, "64 MiB DF read"
h.shutdown()
print("ok")
PY

out=$($UBDKIT serve -U - --run 'uri="$uri" $NBDSH -c "exec(open(\"$tmp/check.py\").read())"' \
    memory size=64M) || fail "nbdsh checks failed against memory backend"
[ "$out" = ok ] || fail "nbdsh script did not finish: $out"

# Simple (non-structured) replies: large reads are streamed differently.
out=$($UBDKIT serve -U - --run '$NBDSH -c "
import os
h.set_request_structured_replies(False)
h.connect_uri(\"$uri\")
assert not h.get_structured_replies_negotiated()
buf = os.urandom(32 << 20)
h.pwrite(buf, 4095)
assert h.pread(32 << 20, 4095) == buf
assert h.pread(1 << 20, 0) == bytes(4095) + buf[:(1 << 20) - 4095]
h.set_strict_mode(0)
try:
    h.pread(512, 64 << 20)
    print(\"out-of-range read accepted\")
except nbd.Error:
    pass
assert h.pread(4096, 4095) == buf[:4096]
print(\"ok\")
"' memory size=64M) || fail "nbdsh without structured replies failed"
[ "$out" = ok ] || fail "nbdsh without structured replies: $out"

# A read-only export must reject writes (libnbd's own check disabled).
out=$($UBDKIT serve -r -U - --run '$NBDSH -u "$uri" -c "
h.set_strict_mode(0)
try:
    h.pwrite(b\"x\" * 512, 0)
    print(\"write accepted\")
except nbd.Error as e:
    print(\"rejected\")
"' memory size=1M) || fail "nbdsh against read-only export failed"
[ "$out" = rejected ] || fail "write to read-only export: $out"
