#!/usr/bin/env bash
# The remote backend over TLS (nbds://, libnbd's TLS with a pre-shared
# key): in front of nbdkit --tls=require, data written through the proxy
# is on the remote and reads back the same both ways, with several
# connections (each its own TLS session).  Without TLS, or with the wrong
# key, start-up fails with an error that names the URI.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires_prog nbdinfo
requires $NBDSH -c 'assert h.supports_tls()'
nbdkit --dump-config | grep -qx 'tls=yes' || skip "nbdkit was built without TLS"
$UBDKIT --help 2>&1 | grep -q '^  nbd ' || skip "built without libnbd"
make_tmpdir
export tmp

# PSK file (nbdkit's and libnbd's format: USERNAME:HEXKEY).
printf 'alice:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
  > "$tmp/keys.psk"
printf 'alice:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
  > "$tmp/wrong.psk"
chmod 600 "$tmp/keys.psk" "$tmp/wrong.psk"

nbdkit -U "$tmp/tls.sock" -P "$tmp/tls.pid" --tls=require \
  --tls-psk="$tmp/keys.psk" memory 64M
cleanup_fn 'kill $(cat "$tmp/tls.pid")'
for i in $(seq 50); do [ -S "$tmp/tls.sock" ] && break; sleep 0.1; done
remote="nbds+unix://alice@/?socket=$tmp/tls.sock&tls-psk-file=$tmp/keys.psk"
nbdinfo --size "$remote" >/dev/null || fail "the TLS remote does not answer nbdinfo"

start_server sock pid nbd uri="$remote" connections=2
proxy="nbd+unix:///?socket=$sock"
[ "$(nbdinfo --size "$proxy")" = $((64 << 20)) ] ||
  fail "size through the TLS proxy: $(nbdinfo --size "$proxy")"
$NBDSH -u "$proxy" -c '
import os
data = os.urandom(1 << 20)
open(os.environ["tmp"] + "/data", "wb").write(data)
h.pwrite(data, 5 << 20)
h.flush()
h.zero(65536, 5 << 20)
assert h.pread(65536, 5 << 20) == bytes(65536)
assert h.pread((1 << 20) - 65536, (5 << 20) + 65536) == data[65536:]
' || fail "writes and reads through the TLS proxy"
# nbdsh -u refuses the key file in a URI: allow it, as nbdinfo does.
$NBDSH -c "h.set_uri_allow_local_file(True); h.connect_uri('$remote')" -c '
import os
data = open(os.environ["tmp"] + "/data", "rb").read()
assert h.pread(65536, 5 << 20) == bytes(65536)
assert h.pread((1 << 20) - 65536, (5 << 20) + 65536) == data[65536:]
' || fail "what was written through the TLS proxy is not on the remote"
# Many requests at once over both TLS connections.
nbdcopy "$proxy" "$tmp/proxy.img"
nbdcopy "$remote" "$tmp/direct.img"
cmp "$tmp/proxy.img" "$tmp/direct.img" || fail "nbdcopy through the TLS proxy differs"

# Refusals: plain NBD to a TLS-only server, and the wrong key.
for uri in "nbd+unix:///?socket=$tmp/tls.sock" \
           "nbds+unix://alice@/?socket=$tmp/tls.sock&tls-psk-file=$tmp/wrong.psk"; do
  if timeout 60 $UBDKIT serve -U "$tmp/bad.sock" nbd uri="$uri" 2> "$tmp/err"; then
    fail "serving $uri succeeded"
  fi
  grep -qF "nbd: $uri" "$tmp/err" || fail "no error naming $uri: $(cat "$tmp/err")"
done
