# A ublk device's counters (`ubdkit stats ID`, `ubdkit list`) after known
# I/O: direct reads and writes of known sizes and counts, one fsync (one
# FLUSH), a discard, and writes that fail (ENOSPC past a thin memory
# disk's reservation).  Compared as differences from a settled baseline:
# the kernel reads the partition table on its own when the device starts.
. "$VMLIB"
add_dev dev memory size=64M reserve=8M
id=$(dev_id "$dev")

# count TYPE COLUMN: from the text of `ubdkit stats ID` (COLUMN 2:
# requests, 3: bytes, 4: errors).
snap () { "$UBDKIT" stats "$id" > /tmp/st.now || fail "ubdkit stats $id"; }
count () { awk -v t="$1" -v c="$2" '$1 == t { print $c }' /tmp/st.now; }
inflight () { sed -n 's/.*in flight \([0-9]*\),.*/\1/p' /tmp/st.now; }
settle () {
  snap; cp /tmp/st.now /tmp/st.prev
  for _i in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.3
    snap
    cmp -s /tmp/st.now /tmp/st.prev && [ "$(inflight)" = 0 ] && return 0
    cp /tmp/st.now /tmp/st.prev
  done
  cat /tmp/st.now; fail "the counters do not settle"
}
# delta TYPE COLUMN WANT WHAT: the change since the baseline must be WANT.
delta () {
  _d=$(( $(count "$1" "$2") - $(awk -v t="$1" -v c="$2" '$1 == t { print $c }' /tmp/st.base) ))
  [ "$_d" = "$3" ] || { cat /tmp/st.base /tmp/st.now; fail "$4: $1 column $2 changed by $_d, not $3"; }
}

settle
grep -q "^device $id (memory):" /tmp/st.now || { cat /tmp/st.now; fail "stats header"; }
cp /tmp/st.now /tmp/st.base

dd if="$dev" of=/dev/null bs=64k count=10 skip=16 iflag=direct 2>/dev/null || fail "reads"
settle
delta read 2 10 "10 direct reads of 64 KiB"
delta read 3 655360 "10 direct reads of 64 KiB"
delta write 2 0 "10 direct reads of 64 KiB"
cp /tmp/st.now /tmp/st.base
dd if=/dev/urandom of="$dev" bs=4k count=6 seek=100 oflag=direct conv=fsync 2>/dev/null ||
  fail "writes"
settle
delta write 2 6 "6 direct writes of 4 KiB"
delta write 3 24576 "6 direct writes of 4 KiB"
delta flush 2 1 "one fsync"
delta read 2 0 "6 direct writes of 4 KiB"
cp /tmp/st.now /tmp/st.base
# -f: without it blkdiscard first probes the device for signatures, with
# buffered reads of its own.
dq=$(cat /sys/block/ublkb$id/queue/discard_max_bytes)
/usr/sbin/blkdiscard -f -o 4194304 -l 1048576 "$dev" || fail "blkdiscard"
settle
delta trim 3 1048576 "a 1 MiB discard"
[ "$dq" -gt 0 ] && delta trim 2 $(( (1048576 + dq - 1) / dq )) "a 1 MiB discard (at most $dq bytes a request)"
delta read 2 0 "a 1 MiB discard"
delta read 4 0 "no read errors"
delta write 4 0 "no write errors"
ok "counters after known I/O: $(grep -E '^  (read|write|flush|trim) ' /tmp/st.now | tr -s ' ' | tr '\n' ';')"

# Past the 8 MiB reservation writes fail: each failed request is counted.
cp /tmp/st.now /tmp/st.base
if dd if=/dev/urandom of="$dev" bs=4k count=4096 seek=4096 oflag=direct 2>/dev/null; then
  fail "16 MiB of writes into an 8 MiB reservation succeeded"
fi
settle
e=$(( $(count write 4) - $(awk '$1 == "write" { print $4 }' /tmp/st.base) ))
[ "$e" -ge 1 ] || { cat /tmp/st.now; fail "no write error counted after ENOSPC"; }
ok "$e failed writes counted"

"$UBDKIT" stats --json "$id" > /tmp/st.json || fail "ubdkit stats --json $id"
grep -q "^{\"kind\":\"ublk\",\"id\":$id,\"enabled\":true,\"backend\":\"memory\",\"counters\":{\"requests\":{\"read\":$(count read 2)," /tmp/st.json ||
  { cat /tmp/st.json; fail "the JSON does not match the text"; }
"$UBDKIT" list > /tmp/list.out
grep -q "^     counters: reads $(count read 2) ($(count read 3) bytes) writes $(count write 2) " /tmp/list.out ||
  { cat /tmp/list.out; fail "ubdkit list lacks the counters line"; }
"$UBDKIT" list --json | grep -q "\"stats\": {\"kind\":\"ublk\",\"id\":$id," ||
  { "$UBDKIT" list --json; fail "ubdkit list --json lacks the stats"; }
ok "stats --json and list agree"
del_dev "$dev"
