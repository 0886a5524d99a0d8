#!/usr/bin/env bash
# The remote backend (plugins/nbd) in front of nbdkit's memory plugin and in
# front of another ubdkit: through the proxy, nbdinfo reports the same size,
# capabilities and allocation map as the direct connection, nbdcopy reads
# the same bytes, and writes, trims, zeroes and FUA writes made through the
# proxy are what the remote then holds.  A URI that does not answer fails
# at start-up with a clear error.
source "${srcdir:-.}/functions.sh"
requires_prog nbdinfo
requires_prog nbdcopy
requires $NBDSH -c pass
$UBDKIT --help 2>&1 | grep -q '^  nbd ' || skip "built without libnbd"
make_tmpdir
export tmp

# info_same DIRECT PROXY: nbdinfo --json equal but for the URI, and
# nbdinfo --map equal.
info_same () {
  nbdinfo --json "$1" > "$tmp/direct.json"
  nbdinfo --json "$2" > "$tmp/proxy.json"
  "$PYTHON" - "$tmp/direct.json" "$tmp/proxy.json" <<'PY' ||
import json, sys
d, p = (json.load(open(f))["exports"][0] for f in sys.argv[1:])
for e in d, p:
    e.pop("uri", None)
# nbdkit advertises no block sizes: the proxy then states the defaults.
for k in "block_size_minimum", "block_size_preferred", "block_size_maximum":
    if k not in d:
        p.pop(k, None)
if d != p:
    print("direct:", d, "\nproxy: ", p)
    sys.exit(1)
PY
    fail "nbdinfo --json differs between $1 and $2"
  nbdinfo --map "$1" > "$tmp/direct.map"
  nbdinfo --map "$2" > "$tmp/proxy.map"
  cmp "$tmp/direct.map" "$tmp/proxy.map" ||
    fail "nbdinfo --map differs: $(cat "$tmp/direct.map") / $(cat "$tmp/proxy.map")"
}

# exercise DIRECT PROXY: write through the proxy, check on the remote.
exercise () {
  $NBDSH -u "$2" -c '
import os
h.pwrite(b"a" * 65536, 1 << 20, nbd.CMD_FLAG_FUA if h.can_fua() else 0)
h.pwrite(b"b" * 4096, 8 << 20)
h.flush()
h.zero(4096, (1 << 20) + 4096)
if h.can_trim():
    h.trim(65536, 4 << 20)
if h.can_cache():
    h.cache(1 << 20, 0)
# Larger than one request slot of the local server: split by the client.
h.pwrite(bytes(range(256)) * 8192, 16 << 20)
'
  $NBDSH -u "$1" -c '
assert h.pread(4096, 1 << 20) == b"a" * 4096
assert h.pread(4096, (1 << 20) + 4096) == bytes(4096)
assert h.pread(57344, (1 << 20) + 8192) == b"a" * 57344
assert h.pread(4096, 8 << 20) == b"b" * 4096
assert h.pread(2 << 20, 16 << 20) == bytes(range(256)) * 8192
' || fail "what was written through $2 is not on the remote"
  nbdcopy "$1" "$tmp/direct.img"
  nbdcopy "$2" "$tmp/proxy.img"
  cmp "$tmp/direct.img" "$tmp/proxy.img" || fail "nbdcopy: contents differ"
}

# The remote: nbdkit's memory plugin.
requires_prog nbdkit
nbdkit -U "$tmp/nbdkit.sock" -P "$tmp/nbdkit.pid" memory 64M
cleanup_fn 'kill $(cat "$tmp/nbdkit.pid")'
for i in $(seq 50); do [ -S "$tmp/nbdkit.sock" ] && break; sleep 0.1; done
remote="nbd+unix:///?socket=$tmp/nbdkit.sock"
start_server sock pid nbd uri="$remote" connections=4
proxy="nbd+unix:///?socket=$sock"
$NBDSH -u "$remote" -c 'h.pwrite(b"x" * 131072, 3 << 20)'
info_same "$remote" "$proxy"
exercise "$remote" "$proxy"
info_same "$remote" "$proxy"

# A remote without multi-conn and with block size limits (nbdkit filters;
# the log filter records what reaches it): the proxy opens one connection
# whatever connections= says, mirrors the limits, and splits a 1 MiB zero
# and trim into 64 KiB pieces.
nbdkit -U "$tmp/limits.sock" -P "$tmp/limits.pid" --filter=log \
  --filter=multi-conn --filter=blocksize-policy memory 16M \
  multi-conn-mode=disable blocksize-minimum=512 blocksize-preferred=4096 \
  blocksize-maximum=65536 logfile="$tmp/limits.log"
cleanup_fn 'kill $(cat "$tmp/limits.pid")'
remote="nbd+unix:///?socket=$tmp/limits.sock"
start_server sock pid nbd uri="$remote" connections=4
proxy="nbd+unix:///?socket=$sock"
nbdinfo --size "$proxy" >/dev/null     # the proxy has connected by now
conns=$(grep -c ' Connect export=' "$tmp/limits.log") || :
[ "$conns" = 1 ] ||
  fail "the proxy opened $conns connections to a remote without multi-conn"
info_same "$remote" "$proxy"
$NBDSH -u "$proxy" -c '
assert not h.can_multi_conn()
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 65536
h.zero(1 << 20, 0)
h.trim(1 << 20, 1 << 20)
h.pwrite(b"y" * 65536, 3 << 20)
'
$NBDSH -u "$remote" -c 'assert h.pread(65536, 3 << 20) == b"y" * 65536'
for cmd in Zero Trim; do
  n=$(grep -c " $cmd id=.* count=0x10000 " "$tmp/limits.log") || :
  [ "$n" = 16 ] || fail "$cmd of 1 MiB: $n pieces of 64 KiB reached the remote, not 16"
done

# The remote: another ubdkit, with a minimum block size (O_DIRECT file)
# and read-only.
truncate -s 32M "$tmp/disk"
start_server rsock rpid file file="$tmp/disk"
remote="nbd+unix:///?socket=$rsock"
start_server sock pid nbd uri="$remote" retry=1
proxy="nbd+unix:///?socket=$sock"
info_same "$remote" "$proxy"
exercise "$remote" "$proxy"
start_server rosock ropid -r memory size=16M
start_server sock pid nbd uri="nbd+unix:///?socket=$rosock"
info_same "nbd+unix:///?socket=$rosock" "nbd+unix:///?socket=$sock"
start_server dsock dpid file file="$tmp/disk" direct=true
start_server sock pid nbd uri="nbd+unix:///?socket=$dsock"
info_same "nbd+unix:///?socket=$dsock" "nbd+unix:///?socket=$sock"
$NBDSH -u "nbd+unix:///?socket=$sock" -c '
assert h.get_block_size(nbd.SIZE_MINIMUM) == 4096
assert h.pread(4096, 8 << 20) == b"b" * 4096
'

# Bad input: a clear error at start-up, not a daemon that serves nothing.
if $UBDKIT serve -U "$tmp/bad.sock" nbd uri="nbd+unix:///?socket=$tmp/nothing" \
    2> "$tmp/err"; then
  fail "serving a URI nobody answers succeeded"
fi
grep -q "nbd: nbd+unix:///?socket=$tmp/nothing" "$tmp/err" ||
  fail "no useful error: $(cat "$tmp/err")"
for bad in "uri=http://x/" "uri=$remote connections=0" "uri=$remote retry=x" \
           "uri=$remote retry-delay=0" "connections=2"; do
  if $UBDKIT serve -U "$tmp/bad.sock" nbd $bad 2> "$tmp/err"; then
    fail "nbd $bad: accepted"
  fi
  grep -q "nbd: " "$tmp/err" || fail "nbd $bad: no error: $(cat "$tmp/err")"
done
