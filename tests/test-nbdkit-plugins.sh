#!/usr/bin/env bash
# Every offline plugin of Debian's nbdkit package, served by ubdkit
# (nbdkit:NAME) and by nbdkit itself: same content byte for byte, same
# size and capabilities, same allocation totals.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires_prog nbdinfo
requires_prog nbdcopy
plugindir=$(pkg-config --variable=plugindir nbdkit 2>/dev/null) ||
  skip "pkg-config cannot find nbdkit's plugindir"
[ -f "$plugindir/nbdkit-memory-plugin.so" ] || skip "no nbdkit plugins in $plugindir"
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
make_tmpdir
export tmp

# What nbdinfo --json says that must match.  Not compared: uri (socket
# paths differ), content (the data is compared instead), block_size_*
# (ubdkit always sends NBD_INFO_BLOCK_SIZE, nbdkit 1.32 only for plugins
# with a block_size callback).
fields () {
  "$PYTHON" -c 'import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
for k in sorted(e):
    if k.startswith("can_") or k.startswith("is_") or k in ("export-size", "contexts"):
        print(k, e[k])' "$1"
}

# serve_both NAME [ARGS...]: $tmp/{u,n}.{json,sum,map} from ubdkit and nbdkit.
# $copyopts lets a test pass nbdcopy options.
serve_both () {
  local name=$1 run
  shift
  run='nbdinfo --json "$uri" > "$tmp/$who.json" &&
       nbdcopy '"${copyopts:-}"' "$uri" - | sha256sum > "$tmp/$who.sum" &&
       nbdinfo --map --totals "$uri" > "$tmp/$who.map"'
  who=u "$UBDKIT" serve -U - "nbdkit:$name" "$@" --run "$run" 2>"$tmp/u.err" ||
    fail "ubdkit serve nbdkit:$name $*: $(cat "$tmp/u.err")"
  who=n nbdkit -U - "$name" "$@" --run "$run" 2>"$tmp/n.err" ||
    fail "nbdkit $name $*: $(cat "$tmp/n.err")"
}

# compare NAME [ARGS...]: content, capabilities and allocation must match.
compare () {
  serve_both "$@"
  fields "$tmp/u.json" > "$tmp/u.fields"
  fields "$tmp/n.json" > "$tmp/n.fields"
  diff -u "$tmp/n.fields" "$tmp/u.fields" ||
    fail "$*: capabilities differ (- nbdkit, + ubdkit)"
  cmp -s "$tmp/n.sum" "$tmp/u.sum" || fail "$*: content differs"
  if [ -z "${nomap:-}" ]; then
    diff -u "$tmp/n.map" "$tmp/u.map" || fail "$*: allocation totals differ"
  fi
  echo "$0: $*: same"
}

head -c 4M /dev/urandom > "$tmp/disk.img"
truncate -s 8M "$tmp/disk.img"        # data, then a hole
head -c 1M /dev/urandom > "$tmp/a.img"
head -c 2M /dev/urandom > "$tmp/b.img"
mkdir "$tmp/dir" "$tmp/od"
echo hello > "$tmp/dir/hello.txt"
# FAT keeps access dates: an access time in the future is one that reading
# the file (relatime) does not change between the two servers.
touch -m -d @1700000000 "$tmp/dir/hello.txt" "$tmp/dir"
touch -a -d 'tomorrow' "$tmp/dir/hello.txt" "$tmp/dir"

compare memory size=8M
compare file "$tmp/disk.img"                  # magic config key: file=
compare file file="$tmp/disk.img" -r
compare null size=8M
compare zero
compare full size=8M
compare pattern size=8M
compare data 'data=1 2 3 @0x1000 4 5 @0x100000 "hello" *4' size=8M
compare sparse-random size=8M seed=42
compare random size=8M seed=42
compare info mode=exportname
compare example1
compare ondemand dir="$tmp/od" size=8M
compare partitioning "$tmp/a.img" "$tmp/b.img" partition-type=mbr
compare floppy "$tmp/dir"
compare eval get_size='echo 1M' \
  pread='dd if=/dev/zero count=$3 iflag=count_bytes status=none'
cat > "$tmp/ro.sh" <<'SH'
#!/bin/sh
case "$1" in
  get_size) echo 2M ;;
  pread) head -c "$3" /dev/zero | tr '\0' 'u' ;;
  can_multi_conn|is_rotational) exit 0 ;;
  *) exit 2 ;;
esac
SH
chmod +x "$tmp/ro.sh"
compare sh "$tmp/ro.sh"
# split's extents crash Debian's split plugin (in nbdkit too): copy
# without block status.
copyopts=--no-extents nomap=1 compare split "$tmp/a.img" "$tmp/b.img"

# Plugins whose images hold random UUIDs and timestamps differ on every
# run (under nbdkit too): check capabilities and that the content is what
# it should be.
# gpt_start IMAGE: the first LBA of the first GPT partition (byte 32 of the
# first entry, which is at LBA 2).
gpt_start () {
  "$PYTHON" -c 'import struct, sys
print(struct.unpack_from("<Q", open(sys.argv[1], "rb").read(2048), 1056)[0])' "$1"
}
serve_both partitioning "$tmp/a.img" "$tmp/b.img" partition-type=gpt
diff <(fields "$tmp/n.json") <(fields "$tmp/u.json") ||
  fail "partitioning gpt: capabilities differ"
"$UBDKIT" serve -U - nbdkit:partitioning "$tmp/a.img" "$tmp/b.img" \
  partition-type=gpt --run 'nbdcopy "$uri" "$tmp/gpt.img"' 2>/dev/null
cmp -s -n 1048576 -i $(( $(gpt_start "$tmp/gpt.img") * 512 )):0 \
  "$tmp/gpt.img" "$tmp/a.img" || fail "partitioning gpt: partition 1 is not a.img"
echo "$0: partitioning gpt (random GUIDs): same capabilities, partition 1 right"

if command -v mke2fs >/dev/null && command -v debugfs >/dev/null; then
  serve_both linuxdisk "$tmp/dir"
  diff <(fields "$tmp/n.json") <(fields "$tmp/u.json") ||
    fail "linuxdisk: capabilities differ"
  "$UBDKIT" serve -U - nbdkit:linuxdisk "$tmp/dir" \
    --run 'nbdcopy "$uri" "$tmp/ext.img"' 2>/dev/null
  start=$(gpt_start "$tmp/ext.img")    # the filesystem is partition 1
  debugfs -R 'cat /hello.txt' "$tmp/ext.img?offset=$((start * 512))" 2>/dev/null |
    grep -qx hello ||
    fail "linuxdisk: /hello.txt is not in the filesystem"
  serve_both tmpdisk size=8M
  diff <(fields "$tmp/n.json") <(fields "$tmp/u.json") ||
    fail "tmpdisk: capabilities differ"
  echo "$0: linuxdisk, tmpdisk: same capabilities, valid filesystem"
else
  echo "$0: note: no mke2fs/debugfs: linuxdisk and tmpdisk not tested"
fi
if command -v xorriso >/dev/null || command -v genisoimage >/dev/null ||
   command -v mkisofs >/dev/null; then
  serve_both iso "$tmp/dir"
  diff <(fields "$tmp/n.json") <(fields "$tmp/u.json") ||
    fail "iso: capabilities differ"
else
  echo "$0: note: iso not tested: it needs xorriso, genisoimage or mkisofs"
fi
