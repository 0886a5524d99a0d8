#!/usr/bin/env bash
# nbdcopy a random image into memory and file exports and back again, with
# the default and the largest request size nbdcopy sends (32 MiB); checksums must match.
source "${srcdir:-.}/functions.sh"
requires_prog nbdcopy
make_tmpdir
export tmp

head -c $((40*1024*1024)) /dev/urandom > "$tmp/src"
sum=$(md5sum < "$tmp/src")

# roundtrip NAME NBDCOPY-OPTS SERVE-ARGS...: copy src in, copy it out, compare.
roundtrip () {
  local name=$1 opts=$2
  shift 2
  rm -f "$tmp/out"
  opts=$opts $UBDKIT serve -U - --run '
      nbdcopy $opts "$tmp/src" "$uri" && nbdcopy $opts "$uri" "$tmp/out"' "$@" ||
    fail "$name: nbdcopy failed (ubdkit serve $*)"
  [ "$(md5sum < "$tmp/out")" = "$sum" ] || fail "$name: data read back differs"
}

roundtrip "memory" "" memory size=40M
roundtrip "memory, 32M requests" "--request-size=$((32*1024*1024))" memory size=40M
# One loop thread and one request slot: nbdcopy's connections and
# requests queue for it, 32M requests stream through one slot buffer.
roundtrip "memory, -t 1 --depth 1" "--request-size=$((32*1024*1024))" \
    -t 1 --depth 1 memory size=40M

truncate -s 40M "$tmp/disk.img"
roundtrip "file" "" file file="$tmp/disk.img"
[ "$(md5sum < "$tmp/disk.img")" = "$sum" ] || fail "file: backing file differs"

truncate -s 40M "$tmp/disk2.img"
roundtrip "file, 32M requests" "--request-size=$((32*1024*1024))" file file="$tmp/disk2.img"
[ "$(md5sum < "$tmp/disk2.img")" = "$sum" ] || fail "file, 32M: backing file differs"

# O_DIRECT file backend (4 KiB-aligned I/O only).
truncate -s 40M "$tmp/disk3.img"
roundtrip "file, direct=true" "" file file="$tmp/disk3.img" direct=true
[ "$(md5sum < "$tmp/disk3.img")" = "$sum" ] || fail "file, direct=true: backing file differs"
