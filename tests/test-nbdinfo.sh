#!/usr/bin/env bash
# nbdinfo (plain, --json, --map) against memory, read-only and sparse file
# exports: size, capability flags and allocation map must match the backend.
source "${srcdir:-.}/functions.sh"
requires_prog nbdinfo
requires $NBDSH -c pass
make_tmpdir
export tmp

size=$((64*1024*1024))

# json_check FILE PYTHON-EXPR: evaluate EXPR with e = the first export.
json_check () {
  "$PYTHON" - "$1" "$2" <<'PY' || fail "nbdinfo --json: $2 is false ($(cat "$1"))"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}

# map_check FILE START END WANT: every extent overlapping [START,END) in the
# nbdinfo --map --json output must be data (WANT=data) or hole/zero (WANT=hole).
map_check () {
  "$PYTHON" - "$@" <<'PY' || fail "nbdinfo --map: [$2,$3) is not all $4: $(cat "$1")"
import json, sys
m = json.load(open(sys.argv[1]))
start, end, want = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
covered = 0
for x in m:
    lo, hi = max(x["offset"], start), min(x["offset"] + x["length"], end)
    if lo >= hi:
        continue
    covered += hi - lo
    is_data = (x["type"] & 3) == 0
    if is_data != (want == "data"):
        sys.exit(1)
sys.exit(0 if covered == end - start else 1)
PY
}

# Plain output and --json on a writable memory disk.
$UBDKIT serve -U - --run 'nbdinfo "$uri" > "$tmp/plain" &&
    nbdinfo --json "$uri" > "$tmp/rw.json"' memory size=64M ||
  fail "ubdkit serve memory: nbdinfo failed"
grep -q "export-size: $size" "$tmp/plain" ||
  fail "nbdinfo plain output lacks 'export-size: $size': $(cat "$tmp/plain")"
json_check "$tmp/rw.json" "e['export-size'] == $size"
json_check "$tmp/rw.json" "e['is_read_only'] is False"
for f in can_flush can_trim can_zero can_fua; do
  json_check "$tmp/rw.json" "e['$f'] is True"
done
json_check "$tmp/rw.json" "'base:allocation' in e.get('contexts', [])"

# Read-only (-r): flagged read-only and no write-type commands advertised.
$UBDKIT serve -r -U - --run 'nbdinfo --json "$uri" > "$tmp/ro.json"' \
    memory size=64M || fail "ubdkit serve -r: nbdinfo failed"
json_check "$tmp/ro.json" "e['export-size'] == $size"
json_check "$tmp/ro.json" "e['is_read_only'] is True"
for f in can_trim can_zero can_fua; do
  json_check "$tmp/ro.json" "e['$f'] is False"
done

# -e NAME: $uri names the export and nbdinfo reaches it.
$UBDKIT serve -e foo -U - --run 'nbdinfo --json "$uri" > "$tmp/name.json"' \
    memory size=1M || fail "ubdkit serve -e foo: nbdinfo \$uri failed"
json_check "$tmp/name.json" "e['export-name'] == 'foo'"
json_check "$tmp/name.json" "e['uri'].split('?')[0].endswith('/foo')"

# --map on a memory disk after writing 1 MiB at 4 MiB.
M=$((1024*1024))
$UBDKIT serve -U - --run '
    $NBDSH -u "$uri" -c "h.pwrite(b\"\\x5a\" * (1<<20), 4<<20)" &&
    nbdinfo --map --json "$uri" > "$tmp/mem-map.json"' memory size=64M ||
  fail "ubdkit serve memory: write + nbdinfo --map failed"
map_check "$tmp/mem-map.json" 0 $M hole
map_check "$tmp/mem-map.json" $((4*M)) $((5*M)) data
map_check "$tmp/mem-map.json" $((16*M)) $size hole

# --map on a sparse file: 1 MiB of data at 4 MiB, holes elsewhere.
truncate -s 64M "$tmp/sparse.img"
head -c $M /dev/urandom | dd of="$tmp/sparse.img" bs=1M seek=4 conv=notrunc status=none
if "$PYTHON" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
sys.exit(0 if os.lseek(fd, 0, os.SEEK_DATA) == 4 << 20 else 1)' "$tmp/sparse.img"
then
  $UBDKIT serve -U - --run 'nbdinfo --map --json "$uri" > "$tmp/file-map.json"' \
      file file="$tmp/sparse.img" || fail "ubdkit serve file: nbdinfo --map failed"
  map_check "$tmp/file-map.json" 0 $M hole
  map_check "$tmp/file-map.json" $((4*M)) $((5*M)) data
  map_check "$tmp/file-map.json" $((16*M)) $size hole
else
  echo "$0: note: $TMPDIR filesystem does not report holes; skipped file --map"
fi
