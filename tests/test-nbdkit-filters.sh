#!/usr/bin/env bash
# nbdkit filters (--filter) over an nbdkit plugin and over a native ubdkit
# backend, served by ubdkit and by nbdkit with the same command line: the
# same bytes (nbdcopy + sha256), the same size and capabilities (nbdinfo
# --json), the same allocation map; and a broken filter (not a filter, a
# wrong version, a refused key) is one clear error at start.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires_prog nbdinfo
requires_prog nbdcopy
filterdir=$(pkg-config --variable=filterdir nbdkit 2>/dev/null) ||
  skip "pkg-config cannot find nbdkit's filterdir"
[ -f "$filterdir/nbdkit-offset-filter.so" ] || skip "no nbdkit filters in $filterdir"
"$UBDKIT" serve --help | grep -q -- '--filter' || skip "ubdkit built without the nbdkit host"
make_tmpdir
export tmp

source "${srcdir:-.}/filter-functions.sh"

# The image: random data, a hole, more data; a partition table with two
# partitions made by nbdkit's partitioning plugin.
head -c 1M /dev/urandom > "$tmp/p1.img"
head -c 2M /dev/urandom > "$tmp/p2.img"
truncate -s 3M "$tmp/p2.img"
nbdkit -U - partitioning "$tmp/p1.img" "$tmp/p2.img" partition-type=mbr \
  --run 'nbdcopy "$uri" "$tmp/disk.img"' || fail "cannot make the image"
img=$tmp/disk.img
# The data plugin's image: bytes, a hole, bytes (its extents are sparse).
data='data=1 2 3 @0x100000 4 5 6 7 @0x400000 "hello" *100'

# The bare backends first: the data plugin must match exactly; of the
# file backend, what differs from nbdkit's file plugin without a filter
# is left out of the comparisons of its chains.
args=("$data" size=8M)
compare_one nbdkit:data data
args=("file=$img")
serve_both file file
file_ignore=$(diff <(fields "$tmp/n.json") <(fields "$tmp/u.json") |
              sed -n 's/^> \([^ ]*\) .*/\1/p' | tr '\n' ' ')
echo "$0: the native file backend differs from nbdkit's file plugin in: ${file_ignore:-nothing}"

compare --filter=offset -- offset=512K range=2M
compare --filter=truncate -- truncate=5000000
compare --filter=truncate -- round-up=1M
fileonly=1 compare --filter=partition -- partition=2
compare --filter=cow
compare --filter=cache
compare --filter=readahead
compare --filter=blocksize -- minblock=4K maxdata=64K
compare --filter=nozero
compare --filter=noextents
compare --filter=fua -- fuamode=emulate
compare --filter=delay -- rdelay=1ms
compare --filter=error -- error-rate=0
compare --filter=log -- logfile="$tmp/log.txt"
compare --filter=stats -- statsfile="$tmp/stats.txt"
compare --filter=retry
compare --filter=noparallel -- serialize=connections
compare --filter=swab -- swab-bits=32
compare --filter=multi-conn -- multi-conn-mode=disable
compare --filter=nocache -- cachemode=emulate
compare --filter=cow --filter=offset --filter=truncate -- offset=1M truncate=2M
grep -q 'Read' "$tmp/log.txt" || fail "the log filter logged no read"
[ -s "$tmp/stats.txt" ] || fail "the stats filter wrote no statistics"

# Writes through a chain reach the backend: cow keeps them to itself,
# offset passes them down at the offset.
cp "$img" "$tmp/w.img"
head -c 65536 /dev/urandom > "$tmp/blk"
"$UBDKIT" serve -U - --filter=offset file file="$tmp/w.img" offset=1M \
  --run 'nbdcopy "$tmp/blk" "$uri" --destination-is-zero=false 2>/dev/null ||
         nbdsh -u "$uri" -c "h.pwrite(open(\"$tmp/blk\",\"rb\").read(), 0)"' \
  2>"$tmp/err" || fail "write through offset: $(cat "$tmp/err")"
cmp -s -n 65536 -i 1048576:0 "$tmp/w.img" "$tmp/blk" ||
  fail "a write through the offset filter did not land at the offset"
cp "$img" "$tmp/w.img"
"$UBDKIT" serve -U - --filter=cow file file="$tmp/w.img" \
  --run 'nbdsh -u "$uri" -c "h.pwrite(b\"x\" * 4096, 0)
assert h.pread(4096, 0) == b\"x\" * 4096"' 2>"$tmp/err" ||
  fail "write through cow: $(cat "$tmp/err")"
cmp -s "$tmp/w.img" "$img" || fail "cow let a write reach the file"
echo "$0: writes: offset passes them down at the offset, cow keeps them"

# Broken filters: one clear error at start, and no server.
expect_error () {
  local want=$1
  shift
  if "$UBDKIT" serve -U "$tmp/sock" "$@" >"$tmp/out" 2>"$tmp/err"; then
    fail "ubdkit serve $* started"
  fi
  grep -q -- "$want" "$tmp/err" ||
    fail "ubdkit serve $*: expected '$want', got: $(cat "$tmp/err")"
  echo "$0: $*: $(grep -- "$want" "$tmp/err" | head -1)"
}
plugindir=$(pkg-config --variable=plugindir nbdkit)
expect_error 'not an nbdkit filter (no filter_init)' \
  --filter="$plugindir/nbdkit-memory-plugin.so" memory size=1M
expect_error 'cannot open filter' --filter=no-such-thing memory size=1M
expect_error 'the round-up parameter must be a power of 2' \
  --filter=truncate memory size=1M round-up=3M
expect_error "memory: unknown parameter 'offsett'" \
  --filter=offset memory size=1M offsett=1
if [ -n "${CC:-cc}" ] && command -v "${CC:-cc}" >/dev/null; then
  cat > "$tmp/badver.c" <<'C'
#include <nbdkit-filter.h>
static struct nbdkit_filter filter = { .name = "badver" };
struct nbdkit_filter *filter_init (void);
struct nbdkit_filter *
filter_init (void)
{
  filter._api_version = NBDKIT_FILTER_API_VERSION;
  filter._version = "1.0.0";
  return &filter;
}
C
  "${CC:-cc}" -shared -fPIC $(pkg-config --cflags nbdkit) -o "$tmp/badver.so" \
    "$tmp/badver.c" || fail "cannot build the wrong-version filter"
  expect_error "filter is incompatible with this version of nbdkit (_version = 1.0.0, need $(pkg-config --modversion nbdkit))" \
    --filter="$tmp/badver.so" memory size=1M
fi
