#!/usr/bin/env bash
# TCP: serve on 127.0.0.1:PORT in captive mode; $port/$uri are set and
# nbdinfo, a write and a read back work over the TCP connection.
source "${srcdir:-.}/functions.sh"
requires_prog nbdinfo
requires $NBDSH -c pass
make_tmpdir
export tmp

port=$(free_tcp_port) || fail "could not find a free TCP port"
$UBDKIT serve --bind 127.0.0.1 -p "$port" --run '
    echo "$port $uri" > "$tmp/vars" &&
    nbdinfo --size "$uri" > "$tmp/size" &&
    $NBDSH -u "$uri" -c "
buf = bytes(range(256)) * 4096
h.pwrite(buf, 12345)
assert h.pread(len(buf), 12345) == buf
"' memory size=8M || fail "nbdinfo/nbdsh over TCP port $port failed"

read -r got_port got_uri < "$tmp/vars"
[ "$got_port" = "$port" ] || fail "\$port is '$got_port', expected $port"
case "$got_uri" in
  nbd://*:$port|nbd://*:$port/*) ;;
  *) fail "\$uri is '$got_uri', expected nbd://HOST:$port[/...]" ;;
esac
[ "$(cat "$tmp/size")" = 8388608 ] || fail "nbdinfo --size over TCP: $(cat "$tmp/size")"
