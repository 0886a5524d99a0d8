#!/usr/bin/env bash
# nbdkit filters over the nbd backend (its blocking table,
# plugins/nbd/blocking.c).  Against a remote `nbdkit file` on a sparse
# image: `ubdkit serve --filter=F nbd uri=REMOTE` and `nbdkit --filter=F
# nbd uri=REMOTE` give the same size and capabilities (nbdinfo --json),
# bytes (nbdcopy + sha256) and allocation map; writes through a filter
# reach the remote.  Then the remote is killed (SIGKILL) and restarted on
# the same socket during a fio verify run: under --filter=retry with the
# backend's own retries off (retry=0), the retry filter's reopen connects
# anew; under --filter=offset the backend reconnects by itself.  Either
# way fio completes with every block verified, and what the proxy reads is
# what the remote's file holds.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires_prog nbdinfo
requires_prog nbdcopy
requires_prog fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio lacks the nbd ioengine"
filterdir=$(pkg-config --variable=filterdir nbdkit 2>/dev/null) ||
  skip "pkg-config cannot find nbdkit's filterdir"
[ -f "$filterdir/nbdkit-retry-filter.so" ] || skip "no nbdkit filters in $filterdir"
nbdkit nbd --version >/dev/null 2>&1 || skip "nbdkit has no nbd plugin"
"$UBDKIT" serve --help | grep -q -- '--filter' || skip "ubdkit built without the nbdkit host"
"$UBDKIT" --help 2>&1 | grep -q '^  nbd ' || skip "ubdkit built without libnbd"
make_tmpdir
export tmp

# The remote: random data, a hole, more data, a hole at the end.
head -c 3M /dev/urandom > "$tmp/disk.img"
truncate -s 5M "$tmp/disk.img"
head -c 2M /dev/urandom >> "$tmp/disk.img"
truncate -s 16M "$tmp/disk.img"
rsock=$tmp/remote.sock
remote="nbd+unix:///?socket=$rsock"
rpid=
cleanup_fn 'kill -9 $rpid 2>/dev/null; wait $rpid 2>/dev/null'

start_remote () {
  rm -f "$rsock"
  nbdkit -f -U "$rsock" file "$tmp/disk.img" 2>> "$tmp/remote.log" &
  rpid=$!
  for i in $(seq 200); do
    nbdinfo --size "$remote" >/dev/null 2>&1 && return
    sleep 0.05
  done
  fail "the remote did not start: $(cat "$tmp/remote.log")"
}
kill_remote () {
  kill -9 $rpid
  wait $rpid 2>/dev/null || :
}

# What nbdinfo --json says that must match (not the uri; block sizes only
# where nbdkit sends them: ubdkit always does).
fields () {
  "$PYTHON" -c 'import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
for k in sorted(e):
    if k.startswith(("can_", "is_")) or k in ("export-size", "contexts", "content"):
        print(k, e[k])' "$1"
}
blocksizes_of () {
  "$PYTHON" -c 'import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
for k in sorted(e):
    if k.startswith("block_size"):
        print(k, min(e[k], 64 << 20) if k == "block_size_maximum" else e[k])' "$1"
}

# compare FILTER-OPTIONS... [-- KEY=VALUE...]: both servers over the remote.
compare () {
  local opts=() run what
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  what="${opts[*]} $*"
  run='nbdinfo --json "$uri" > "$tmp/$who.json" &&
       nbdcopy "$uri" - | sha256sum > "$tmp/$who.sum" &&
       nbdinfo --map --totals "$uri" > "$tmp/$who.map"'
  who=ubdkit "$UBDKIT" serve -U - "${opts[@]}" nbd uri="$remote" "$@" \
      --run "$run" 2>"$tmp/u.err" ||
    fail "ubdkit serve $what: $(cat "$tmp/u.err")"
  if [ -z "${ubdkit_only:-}" ]; then
    who=nbdkit nbdkit -U - "${opts[@]}" nbd uri="$remote" "$@" \
        --run "$run" 2>"$tmp/n.err" ||
      fail "nbdkit $what: $(cat "$tmp/n.err")"
  fi
  diff -u <(fields "$tmp/nbdkit.json") <(fields "$tmp/ubdkit.json") ||
    fail "$what: capabilities or size differ (- nbdkit, + ubdkit)"
  if [ -n "$(blocksizes_of "$tmp/nbdkit.json")" ]; then
    diff -u <(blocksizes_of "$tmp/nbdkit.json") \
            <(blocksizes_of "$tmp/ubdkit.json") ||
      fail "$what: block sizes differ (- nbdkit, + ubdkit)"
  fi
  cmp -s "$tmp/nbdkit.sum" "$tmp/ubdkit.sum" || fail "$what: content differs"
  diff -u "$tmp/nbdkit.map" "$tmp/ubdkit.map" ||
    fail "$what: allocation map differs"
  echo "$0: $what: same"
}

start_remote
compare --filter=offset -- offset=1M range=8M
compare --filter=truncate -- truncate=5000000
compare --filter=cow
compare --filter=cache
compare --filter=readahead
compare --filter=blocksize -- minblock=4K maxdata=64K
compare --filter=nozero
compare --filter=noextents
compare --filter=fua -- fuamode=emulate
compare --filter=nocache
compare --filter=multi-conn -- multi-conn-mode=plugin
compare --filter=retry
compare --filter=cow --filter=offset --filter=truncate -- offset=512K truncate=4M
# ubdkit's own keys, each against nbdkit's answers just before it:
# readonly=true (as -r), connections=2 (two handles per filter context:
# the remote allows multi-conn).
compare -r --filter=offset -- offset=1M
ubdkit_only=1 compare --filter=offset -- offset=1M readonly=true
compare --filter=offset -- offset=1M
ubdkit_only=1 compare --filter=offset -- offset=1M connections=2

# Writes through a filter reach the remote, at the filter's offset.
head -c 256K /dev/urandom > "$tmp/pat"
"$UBDKIT" serve -U - --filter=offset nbd uri="$remote" offset=6M \
    --run 'nbdcopy "$tmp/pat" "$uri"' 2>"$tmp/u.err" ||
  fail "write through --filter=offset: $(cat "$tmp/u.err")"
cmp <(dd if="$tmp/disk.img" bs=1M skip=6 count=1 2>/dev/null | head -c 256K) \
    "$tmp/pat" || fail "the write through --filter=offset is not at 6M in the remote"

# A wrong URI under a filter is one clear error at start.
if "$UBDKIT" serve -U - --filter=offset nbd uri="nbd+unix:///?socket=$tmp/none" \
     --run true 2>"$tmp/u.err"; then
  fail "a remote that is not there was served"
fi
grep -q "nbd: nbd+unix:///?socket=$tmp/none: " "$tmp/u.err" ||
  fail "no clear error for a missing remote: $(cat "$tmp/u.err")"

# fio_through NAME SERVE-ARGS...: fio verify writes through a proxy while
# the remote is killed and restarted twice; every block must verify.
fio_through () {
  local name=$1 sock ppid
  shift
  start_server sock ppid -v "$@" 2>"$tmp/$name.log"
  cat > "$tmp/$name.fio" <<FIO
[global]
ioengine=nbd
uri=nbd+unix:///?socket=$sock
rw=randwrite
bs=4k
iodepth=8
size=8m
rate_iops=400
verify=crc32c
verify_fatal=1
do_verify=1
verify_state_save=0

[a]
offset=0

[b]
offset=8m
FIO
  fio --output="$tmp/$name.out" "$tmp/$name.fio" &
  local fpid=$!
  cleanup_fn "kill $fpid 2>/dev/null"
  for round in 1 2; do
    sleep 1
    kill -0 $fpid 2>/dev/null ||
      fail "$name: fio finished before round $round: too fast to test anything"
    kill_remote
    sleep 0.5
    start_remote
  done
  wait $fpid || { cat "$tmp/$name.out"; fail "$name: fio failed through the proxy"; }
  [ "$(grep -c 'err= 0' "$tmp/$name.out")" = 2 ] ||
    { cat "$tmp/$name.out"; fail "$name: expected two fio jobs with err= 0"; }
  # Nothing acknowledged was lost: the proxy reads what the remote holds.
  nbdcopy "nbd+unix:///?socket=$sock" - | sha256sum > "$tmp/$name.proxy.sum"
  kill $ppid
  wait $ppid 2>/dev/null || :
  echo "$0: $name: fio verified through two remote restarts"
}

# The retry filter does the reconnecting: the backend gives up at once
# (retry=0), the filter reopens its next layer, which connects anew.
fio_through retry --filter=retry nbd uri="$remote" retry=0 retry-delay=1
grep -Eq 'reopens needed: [1-9]' "$tmp/retry.log" ||
  fail "the retry filter reopened nothing: $(cat "$tmp/retry.log")"
! grep -q 'nbd: .*: reconnected' "$tmp/retry.log" ||
  fail "with retry=0 the backend reconnected by itself: $(cat "$tmp/retry.log")"
cmp -s "$tmp/retry.proxy.sum" <(sha256sum < "$tmp/disk.img") ||
  fail "retry: the proxy and the remote's file differ"

# The backend reconnects by itself under a filter without retry.
fio_through offset --filter=offset nbd uri="$remote" offset=0 retry=30 \
    retry-delay=0.1
grep -q 'nbd: .*: reconnected' "$tmp/offset.log" ||
  fail "the backend did not reconnect: $(cat "$tmp/offset.log")"
cmp -s "$tmp/offset.proxy.sum" <(sha256sum < "$tmp/disk.img") ||
  fail "offset: the proxy and the remote's file differ"
