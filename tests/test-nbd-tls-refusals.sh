#!/usr/bin/env bash
# TLS refusals.  Each refused client is followed by a good one that must
# still work on the same server, which must stay up; where a handshake
# fails, the server must log it (ubdkit: exactly one "TLS handshake
# failed" line, naming the peer's address over TCP).
#   - raw protocol (test-nbd-tls-refusals.py) against --tls=require X.509:
#     plaintext LIST/INFO/GO/STRUCTURED_REPLY/LIST_META_CONTEXT get
#     NBD_REP_ERR_TLS_REQD, plaintext EXPORT_NAME is closed with no answer,
#     STARTTLS with data gets ERR_INVALID, a second STARTTLS inside TLS gets
#     ERR_INVALID (and the session still works), garbage instead of a
#     ClientHello, a client gone right after the ACK or after half a
#     ClientHello, and option bytes sent right behind STARTTLS in the same
#     write (never answered in plaintext: they fail the handshake);
#   - libnbd plaintext client on --tls=require: refused;
#   - a client trusting another CA; a client with another CA's certificate,
#     and one with none, on --tls-verify-peer; the wrong PSK and an
#     unknown PSK user; the expired server certificate (the client
#     refuses; a client that does not verify still gets served);
#   - ubdkit: --tls-allow-dn: client2 refused, client1 served, and
#     --tls-allow-dn implies --tls-verify-peer.
source "${srcdir:-.}/functions.sh"
source "$srcdir/tls-functions.sh"
requires_tls
requires_prog nbdinfo
requires_prog timeout
make_tmpdir
export tmp
T=$tmp/tls
tls_setup "$T" || fail "tls-setup.sh failed"

X509=(--tls=require --tls-certificates="$T/server")

# The raw protocol cases.
tls_start raw unix "${X509[@]}"
exact=0; tls_ubdkit && exact=1
timeout 300 "$PYTHON" "$srcdir/test-nbd-tls-refusals.py" "$sock_raw" "$pid_raw" \
  "$tmp/raw.log" "$HS_FAILED" "$T/client" $exact ||
  { tail -30 "$tmp/raw.log"; fail "test-nbd-tls-refusals.py"; }

# refuse_hs NAME URI WHAT: refused, the server logs the failed handshake,
# a good client ($good) then works.
refuse_hs () {
  local n
  n=$(hs_failures "$1")
  refused "$1" "$2" "$3"
  expect_hs_failure "$1" "$n" "$3"
  good_client "$1" "$good" "$3"
  echo "ok - $3: refused, logged; a good client then works"
}

# Plaintext libnbd client on --tls=require (TCP).
tls_start req tcp "${X509[@]}"
good=$(x509_uri req "$T/client")
refused req "$(plain_uri req)" "plaintext client on --tls=require"
grep -- "$HS_FAILED" "$tmp/req.log" && fail "a plaintext client made $SERVER log a failed handshake"
good_client req "$good" "after a plaintext client"
echo "ok - plaintext libnbd client refused on --tls=require; a good client then works"
# The client does not trust the server's CA.
refuse_hs req "$(x509_uri req "$T/otherca")" "client trusting another CA"
if tls_ubdkit; then
  grep -- "$HS_FAILED" "$tmp/req.log" | grep -q '127\.0\.0\.1' ||
    fail "the failed handshake line does not name the peer: $(grep -- "$HS_FAILED" "$tmp/req.log")"
fi

# --tls-verify-peer: another CA's client certificate, and none.
tls_start vp unix "${X509[@]}" --tls-verify-peer
good=$(x509_uri vp "$T/client")
refuse_hs vp "$(x509_uri vp "$T/otherca")" "--tls-verify-peer, client certificate of another CA"
refuse_hs vp "$(x509_uri vp "$T/noclient")" "--tls-verify-peer, no client certificate"

# PSK: the wrong key, an unknown user.
tls_start psk unix --tls=require --tls-psk="$T/keys.psk"
good=$(psk_uri psk alice "$T/keys.psk")
refuse_hs psk "$(psk_uri psk alice "$T/wrong.psk")" "wrong PSK"
printf 'carol:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > "$T/carol.psk"
refuse_hs psk "$(psk_uri psk carol "$T/carol.psk")" "unknown PSK user"
refuse_hs psk "$(x509_uri psk "$T/client")" "X.509 client on a PSK server"

# Expired server certificate: the client refuses it; one that does not
# verify the server is still served.  Over TCP: libnbd 1.14 checks the
# server's certificate only when it has a host name to check it for.
tls_start exp tcp --tls=require --tls-certificates="$T/expired"
n=$(hs_failures exp)
refused exp "$(x509_uri exp "$T/client")" "expired server certificate"
expect_hs_failure exp "$n" "expired server certificate"
timeout 60 nbdinfo --size "$(x509_uri exp "$T/client")" 2>&1 | grep -qi 'expired\|certificate' ||
  fail "expired server certificate: libnbd did not say why"
port="$port_exp" cdir="$T/client" timeout 60 $NBDSH -c '
import os
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(os.environ["cdir"])
h.set_tls_verify_peer(False)
h.connect_tcp("localhost", os.environ["port"])
assert h.get_tls_negotiated()
assert h.get_size() == 64 << 20
' || fail "expired server certificate: a client that does not verify was not served"
tls_alive exp
echo "ok - expired server certificate refused by the client, logged; a non-verifying client then works"

if tls_ubdkit; then
  # --tls-allow-dn, repeatable; implies --tls-verify-peer.
  tls_start dn tcp "${X509[@]}" --tls-allow-dn "$TLS_DN1" --tls-allow-dn 'CN=nobody,O=ubdkit test'
  good=$(x509_uri dn "$T/client")
  good_client dn "$good" "--tls-allow-dn, client1"
  refuse_hs dn "$(x509_uri dn "$T/client2")" "--tls-allow-dn, client2 not listed"
  refuse_hs dn "$(x509_uri dn "$T/noclient")" "--tls-allow-dn, no client certificate"
  refuse_hs dn "$(x509_uri dn "$T/otherca")" "--tls-allow-dn, listed DN from another CA"
fi

if tls_ubdkit; then
  # A client that stalls mid-handshake is closed by --handshake-timeout,
  # with one line that says so.
  tls_start to tcp "${X509[@]}" --handshake-timeout 2
  n=$(hs_failures to)
  port="$port_to" srcdir="$srcdir" timeout 60 "$PYTHON" - <<'PY' || fail "--handshake-timeout: a stalled TLS handshake was not closed"
import os, sys, time
sys.path.insert(0, os.environ["srcdir"])
import nbdraw
c = nbdraw.Conn(("127.0.0.1", int(os.environ["port"])), timeout=30)
c.handshake()
rep, _ = c.option(nbdraw.OPT_STARTTLS)
assert rep == nbdraw.REP_ACK, rep
c.send(bytes.fromhex("1603010100") + b"\x01" * 20)   # a ClientHello begun
t = time.time()
assert c.sock.recv(4096) == b"", "the server sent something"
assert 1.5 < time.time() - t < 10, time.time() - t
PY
  expect_hs_failure to "$n" "--handshake-timeout"
  grep -q "TLS handshake failed: not done within 2 s" "$tmp/to.log" ||
    fail "--handshake-timeout: the log does not say why"
  good_client to "$(x509_uri to "$T/client")" "after a stalled handshake"
  echo "ok - a stalled TLS handshake is closed by --handshake-timeout, one log line"
  tls_alive to
fi

for n in raw req vp psk exp; do tls_alive $n; done
echo "ok - every server is still up"
