#!/usr/bin/env bash
# The nbdkit filter host adds no allocation to the I/O path: filters that
# allocate nothing per request themselves (measured with
# bench/filter-alloc.sh, docs/nbdkit-filters.md "Allocation per request")
# served over the file backend make no call to the malloc family, mmap,
# mremap, brk or pthread_create during reads (QD1 and 16 in flight),
# writes, FUA writes, flushes, trims, write-zeroes, block status and
# cache, once the connection is up (alloc-counter.so, LD_PRELOADed).  A
# regression in plugins/nbdkit/filter*.c (or in the lists the host gives
# filters, extents.c) fails here; so does the counter missing one: cow,
# which allocates a block buffer per request, must be caught.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires_prog nbdcopy
requires_prog tar
requires "$PYTHON" -c 'import nbd'
[ "${UBDKIT_SANITIZED:-no}" = no ] ||
  skip "sanitizer builds allocate in their runtime and reject LD_PRELOAD"
filterdir=$(pkg-config --variable=filterdir nbdkit 2>/dev/null) ||
  skip "pkg-config cannot find nbdkit's filterdir"
[ -f "$filterdir/nbdkit-offset-filter.so" ] || skip "no nbdkit filters in $filterdir"
"$UBDKIT" serve --help | grep -q -- '--filter' || skip "ubdkit built without the nbdkit host"
counter="${builddir:-.}/alloc-counter.so"
[ -f "$counter" ] || fail "$counter is not built (make check builds it)"
script="$srcdir/../bench/filter-alloc.sh"
[ -f "$script" ] || fail "$script is missing"
make_tmpdir

# The filters that measured zero, and a chain of two (each case's filters
# must be installed: Debian's nbdkit 1.32 has them all).
cases="nofilter offset truncate partition blocksize blocksize-policy nozero
  noextents fua multi-conn protect delay error retry retry-request noparallel
  nocache tar offset+truncate"
run=()
for c in $cases; do
  for f in ${c//+/ }; do
    [ -f "$filterdir/nbdkit-$f-filter.so" ] ||
      { echo "$0: $c: the $f filter is not installed: not checked"; continue 2; }
  done
  run+=("$c")
done

check () {
  ALLOC_N=200 ALLOC_TRACE=8 ALLOC_CHECK_ZERO=1 ALLOC_TMPDIR="$tmp" \
    ALLOC_COUNTER="$counter" bash "$script" "$@"
}
check "${run[@]}" > "$tmp/report" 2> "$tmp/log" && status=0 || status=$?
cat "$tmp/report"
[ $status = 1 ] && fail "a filter case allocated on the I/O path (table and call stacks above)"
[ $status = 0 ] || { cat "$tmp/log"; fail "filter-alloc.sh failed (exit $status)"; }
# Every case ran: one row with nine operations' cells each.
[ "$(grep -c '^| ' "$tmp/report")" -eq $(( ${#run[@]} + 1 )) ] ||
  fail "expected ${#run[@]} rows in the report"
grep -q 'FAILED\|not installed' "$tmp/report" && fail "a case did not run"

# The counter sees a filter's allocations: cow's must fail the check.
check cow > "$tmp/cow" 2> "$tmp/log" && status=0 || status=$?
[ $status = 1 ] || { cat "$tmp/cow" "$tmp/log"; fail "cow's allocations were not counted (exit $status)"; }
grep -q '| cow | cow | 1.00 malloc |' "$tmp/cow" ||
  { cat "$tmp/cow"; fail "cow: expected one malloc per read"; }
echo "$0: ${#run[@]} filter cases allocate nothing per request; cow's are seen"
