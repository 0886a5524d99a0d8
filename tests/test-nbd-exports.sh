#!/bin/bash
# Several exports from one process: NBD_OPT_LIST with descriptions, the
# default export, read-only per export, independent data, bad specs.
source "${srcdir:-.}/functions.sh"
requires_prog nbdinfo
requires "$PYTHON" -c 'import nbd'
make_tmpdir

"$UBDKIT" serve -U - -e main --description "the main disk" memory size=16M \
  -E 'scratch null size=1G description="scratch space"' \
  -E 'ro memory size=8M readonly=true' --run '
  set -e
  nbdinfo --list --json "$uri" > '"$tmp"'/list.json
  $NBDSH -c "
import json, nbd
l = json.load(open(\"'"$tmp"'/list.json\"))
names = {e[\"export-name\"]: e for e in l[\"exports\"]}
assert sorted(names) == [\"main\", \"ro\", \"scratch\"], names
assert names[\"main\"][\"description\"] == \"the main disk\"
assert names[\"scratch\"][\"description\"] == \"scratch space\"
assert names[\"scratch\"][\"export-size\"] == 1 << 30
assert names[\"ro\"][\"is_read_only\"] and not names[\"main\"][\"is_read_only\"]
def conn(name):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(\"$unixsocket\")
    return h
m, d, r = conn(\"main\"), conn(\"\"), conn(\"ro\")
assert d.get_size() == m.get_size() == 16 << 20   # \"\" is the default export
m.pwrite(b\"x\" * 4096, 0)
assert d.pread(4096, 0) == b\"x\" * 4096
assert r.pread(4096, 0) == bytes(4096)             # exports are independent
try:
    r.pwrite(b\"y\" * 512, 0)
    raise AssertionError(\"write to read-only export succeeded\")
except nbd.Error as e:
    assert e.errno in (1, \"EPERM\"), e.errno      # EPERM
try:
    conn(\"nosuch\")
    raise AssertionError(\"unknown export accepted\")
except nbd.Error:
    pass
print(\"exports ok\")
"' > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "several exports"; }
grep -q "exports ok" "$tmp/out" || { cat "$tmp/out"; fail "no result"; }

# Bad specs: one-line errors, exit status 2.
for spec in 'onlyname' 'x nosuchbackend' 'x memory size=1M readonly=maybe' \
            'x memory size=1M description="unterminated'; do
  set +e
  "$UBDKIT" serve -U - null size=1M -E "$spec" --run true 2> "$tmp/err"
  st=$?
  set -e
  [ $st = 2 ] || fail "-E '$spec': exit status $st, want 2"
done
set +e
"$UBDKIT" serve -U - -E 'a null size=1M' -E 'a null size=2M' --run true 2> "$tmp/err"
st=$?
set -e
[ $st = 2 ] && grep -q "given twice" "$tmp/err" || fail "duplicate export names accepted"
echo "several exports: ok"
