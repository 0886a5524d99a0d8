#!/usr/bin/env bash
# TLS with real clients (certificates from tls-setup.sh): ubdkit serve
# --tls=require with X.509 (with and without --tls-verify-peer) and with
# PSK, each over a Unix socket and over TCP.  On each: nbdinfo answers the
# size; nbdcopy copies 24 MiB of random data in over 4 connections and out
# again, identical (cmp); nbdsh writes and reads back; qemu-img and qemu-io
# (tls-creds-x509 / tls-creds-psk objects) read the size, write a pattern
# and read it back; fio's nbd engine (libnbd with $HOME/.pki/libnbd, as an
# unprivileged user, X.509 over TCP) runs randrw with crc32c verify.
# --tls=on serves plaintext and TLS clients alike; --run's $uri is
# nbds+unix:// or nbds:// under --tls.  For ubdkit also: each TLS
# connection's -v line says "userspace TLS records" (the host has no kernel
# TLS), names the PSK user or the client DN; --tls-ktls=off and
# --tls-priority work.  SERVER=nbdkit runs the same against nbdkit (what
# only ubdkit logs is then not checked).
source "${srcdir:-.}/functions.sh"
source "$srcdir/tls-functions.sh"
requires_tls
requires_prog nbdinfo
requires_prog nbdcopy
requires_prog timeout
make_tmpdir
export tmp
T=$tmp/tls
tls_setup "$T" || fail "tls-setup.sh failed"

M=$((1 << 20))
head -c $((24 * M)) /dev/urandom > "$tmp/src.img"
truncate -s $((64 * M)) "$tmp/src.img"

# roundtrip NAME URI WHAT: nbdinfo, nbdcopy in and out, nbdsh.
roundtrip () {
  local name=$1 uri=$2 what=$3
  good_client "$name" "$uri" "$what: nbdinfo"
  rm -f "$tmp/out.img"
  timeout 120 nbdcopy --connections=4 "$tmp/src.img" "$uri" ||
    fail "$what: nbdcopy in"
  timeout 120 nbdcopy --connections=4 "$uri" "$tmp/out.img" ||
    fail "$what: nbdcopy out"
  cmp "$tmp/src.img" "$tmp/out.img" || fail "$what: nbdcopy round trip differs"
  uri="$uri" timeout 60 $NBDSH -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["uri"])
assert h.get_size() == 64 << 20
buf = os.urandom(3 << 20)
h.pwrite(buf, 40 << 20)
h.flush()
assert h.pread(len(buf), 40 << 20) == buf
h.zero(1 << 20, 41 << 20)
assert h.pread(1 << 20, 41 << 20) == bytes(1 << 20)
h.shutdown()
' || fail "$what: nbdsh write/read"
  tls_alive "$name"
  echo "ok - $what: nbdinfo, nbdcopy x4 round trip, nbdsh"
}

# qemu_check NAME OBJECT WHAT: qemu-img info and qemu-io write/read through
# the tls-creds object OBJECT (id tls0) on server NAME.
qemu_check () {
  local name=$1 obj=$2 what=$3 s="sock_$1" p="port_$1" opts
  command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "note: qemu-img/qemu-io not installed: $what skipped"; return 0; }
  if [ -n "${!s:-}" ]; then opts="driver=nbd,path=${!s}"
  else opts="driver=nbd,host=localhost,port=${!p}"; fi
  opts="$opts,tls-creds=tls0,tls-hostname=localhost"
  timeout 60 qemu-img info --object "$obj" --image-opts "$opts" > "$tmp/qinfo" ||
    fail "$what: qemu-img info"
  grep -q 'virtual size: 64 MiB' "$tmp/qinfo" || fail "$what: qemu-img info: $(cat "$tmp/qinfo")"
  timeout 60 qemu-io --object "$obj" --image-opts "$opts" \
    -c 'write -P 0x5a 1M 2M' -c 'read -P 0x5a 1M 2M' -c 'read -P 0 62M 1M' \
    > "$tmp/qio" 2>&1 || { cat "$tmp/qio"; fail "$what: qemu-io"; }
  grep -q 'Pattern verification failed' "$tmp/qio" && { cat "$tmp/qio"; fail "$what: qemu-io pattern"; }
  # qemu-img convert out: the pattern qemu-io wrote is in the copy.
  timeout 60 qemu-img convert --object "$obj" --image-opts "$opts" -O raw "$tmp/q.img" ||
    fail "$what: qemu-img convert"
  cmp -n $((2 * M)) -i $((1 * M)):0 "$tmp/q.img" <(head -c $((2 * M)) /dev/zero | tr '\0' 'Z') ||
    fail "$what: qemu-img convert: the pattern is not there"
  rm -f "$tmp/q.img"
  tls_alive "$name"
  echo "ok - $what: qemu-img info/convert, qemu-io write/read -P"
}

# ubdkit's -v line for each TLS connection: "TLS" and the record path.
ubdkit_says () { # NAME PATTERN WHAT
  tls_ubdkit || return 0
  grep -- "TLS" "$tmp/$1.log" | grep -q -- "$2" ||
    { grep TLS "$tmp/$1.log" | tail -5 >&2; fail "$3: no -v line with 'TLS' and '$2' in $1's log"; }
}
host_has_ktls () { [ -d /sys/module/tls ] || modprobe -n tls 2>/dev/null; }

# X.509, server certificate only, Unix and TCP.
X509=(--tls=require --tls-certificates="$T/server")
tls_start xu unix "${X509[@]}"
tls_start xt tcp "${X509[@]}"
roundtrip xu "$(x509_uri xu "$T/client")" "X.509 over Unix"
roundtrip xt "$(x509_uri xt "$T/client")" "X.509 over TCP"
# A client without a certificate of its own is fine here.
good_client xu "$(x509_uri xu "$T/noclient")" "X.509 without client certificate"
qemu_check xu "tls-creds-x509,id=tls0,dir=$T/client,endpoint=client" "qemu X.509 over Unix"
qemu_check xt "tls-creds-x509,id=tls0,dir=$T/client,endpoint=client" "qemu X.509 over TCP"
if host_has_ktls; then
  echo "note: this host has kernel TLS: not checking for userspace TLS records"
else
  ubdkit_says xu 'userspace TLS records' "X.509 over Unix"
  ubdkit_says xt 'userspace TLS records' "X.509 over TCP"
  tls_ubdkit && grep TLS "$tmp/xt.log" | grep -qE ': kTLS$' &&
    fail "ubdkit said kTLS on a host without the tls module"
fi

# X.509 with client certificates checked.
tls_start xv tcp "${X509[@]}" --tls-verify-peer
roundtrip xv "$(x509_uri xv "$T/client")" "X.509 --tls-verify-peer over TCP"
good_client xv "$(x509_uri xv "$T/client2")" "X.509 --tls-verify-peer, client2"
ubdkit_says xv "$TLS_DN1" "--tls-verify-peer: client1's DN"
ubdkit_says xv "$TLS_DN2" "--tls-verify-peer: client2's DN"
qemu_check xv "tls-creds-x509,id=tls0,dir=$T/client,endpoint=client" "qemu X.509 --tls-verify-peer"

# fio's nbd engine takes only a URI and libnbd refuses tls-certificates=
# there: it finds certificates in $HOME/.pki/libnbd, which libnbd reads
# only when not root, so fio runs as nobody.
if fio --enghelp=nbd >/dev/null 2>&1 && command -v setpriv >/dev/null; then
  fh=$tmp/fiohome
  mkdir -p "$fh/.pki"
  cp -r "$T/client" "$fh/.pki/libnbd"
  chown -R 65534:65534 "$fh"
  chmod 755 "$tmp"
  (cd "$fh" && timeout 120 setpriv --reuid=65534 --regid=65534 --clear-groups \
     env HOME="$fh" fio --name=tls --ioengine=nbd --uri="nbds://localhost:$port_xv/" \
       --rw=randrw --bs=4k-64k --iodepth=16 --size=16m --offset=8m \
       --verify=crc32c --verify_fatal=1 --output="$fh/fio.out") ||
    { cat "$fh/fio.out" 2>/dev/null; fail "fio nbd engine over TLS"; }
  grep -q 'err= 0' "$fh/fio.out" || { cat "$fh/fio.out"; fail "fio nbd engine over TLS: errors"; }
  echo "ok - fio nbd engine, X.509 --tls-verify-peer over TCP, randrw verify"
else
  echo "note: fio without the nbd engine or no setpriv: fio over TLS skipped"
fi

# PSK, Unix and TCP; both users of the file.
PSK=(--tls=require --tls-psk="$T/keys.psk")
tls_start pu unix "${PSK[@]}"
tls_start pt tcp "${PSK[@]}"
roundtrip pu "$(psk_uri pu alice "$T/keys.psk")" "PSK over Unix"
roundtrip pt "$(psk_uri pt alice "$T/keys.psk")" "PSK over TCP"
good_client pu "$(psk_uri pu bob "$T/keys.psk")" "PSK, user bob"
ubdkit_says pu "psk user 'alice'" "PSK over Unix"
ubdkit_says pu "psk user 'bob'" "PSK, user bob"
host_has_ktls || ubdkit_says pt 'userspace TLS records' "PSK over TCP"
# qemu's tls-creds-psk reads DIR/keys.psk.
qemu_check pu "tls-creds-psk,id=tls0,dir=$T,username=alice,endpoint=client" "qemu PSK over Unix"
qemu_check pt "tls-creds-psk,id=tls0,dir=$T,username=alice,endpoint=client" "qemu PSK over TCP"

# --tls=on: TLS offered, plaintext still served.
tls_start on unix --tls=on --tls-certificates="$T/server"
good_client on "$(plain_uri on)" "--tls=on, plaintext"
good_client on "$(x509_uri on "$T/client")" "--tls=on, TLS"
uri="$(plain_uri on)" $NBDSH -c '
import os
h.connect_uri(os.environ["uri"])
assert not h.get_tls_negotiated()
h.pwrite(b"p" * 4096, 0)
' || fail "--tls=on: plaintext write"
uri="$(x509_uri on "$T/client")" $NBDSH -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["uri"])
assert h.get_tls_negotiated()
assert h.pread(4096, 0) == b"p" * 4096
' || fail "--tls=on: TLS read of the plaintext write"
echo "ok - --tls=on serves plaintext and TLS clients"

# --run: $uri under TLS.
for transport in unix tcp; do
  if [ $transport = unix ]; then listen=(-U -); else listen=(--bind 127.0.0.1 -p 0); fi
  tls_ubdkit || break
  : > "$tmp/run.out"
  timeout 60 "$UBDKIT" serve "${listen[@]}" "${X509[@]}" --run '
    echo "$uri" > "$tmp/run.uri"
    case $uri in *\?*) sep="&" ;; *) sep="?" ;; esac
    nbdinfo --size "$uri${sep}tls-certificates=$T/client" > "$tmp/run.out"' \
    memory size=8M 2> "$tmp/run.log" || { cat "$tmp/run.log"; fail "--run over $transport"; }
  got=$(cat "$tmp/run.uri")
  case $transport:$got in
    unix:nbds+unix:///\?socket=*) ;;
    tcp:nbds://127.0.0.1:*/) ;;
    *) fail "--run over $transport: \$uri is '$got'" ;;
  esac
  [ "$(cat "$tmp/run.out")" = 8388608 ] || fail "--run over $transport: nbdinfo said $(cat "$tmp/run.out")"
  echo "ok - --run over $transport: \$uri=$got works with the client's certificates"
done

if tls_ubdkit; then
  # --tls-ktls=off: userspace TLS records always; a priority string.
  tls_start ko unix "${X509[@]}" --tls-ktls=off
  good_client ko "$(x509_uri ko "$T/client")" "--tls-ktls=off"
  ubdkit_says ko 'userspace TLS records' "--tls-ktls=off"
  tls_start pr unix "${X509[@]}" --tls-priority='NORMAL:-VERS-ALL:+VERS-TLS1.2'
  good_client pr "$(x509_uri pr "$T/client")" "--tls-priority TLS 1.2 only"
  if timeout 10 "$UBDKIT" serve -U "$tmp/bad.sock" "${X509[@]}" \
       --tls-priority='NO-SUCH-PRIORITY' memory size=8M 2> "$tmp/badprio.log"; then
    fail "--tls-priority with a bad string: the server started"
  fi
  echo "ok - --tls-ktls=off and --tls-priority; a bad priority string refused at start"

  # Every export of a multi-export server: served over TLS by name, and
  # refused in plaintext (NBD_REP_ERR_TLS_REQD for INFO on each).
  TLS_BACKEND="memory size=64M" tls_start me unix "${X509[@]}" \
    -E 'second memory size=16M' -E 'third null size=8M'
  for e in "" second third; do
    got=$(timeout 60 nbdinfo --size "nbds+unix:///$e?socket=$sock_me&tls-certificates=$T/client") ||
      fail "multi-export: export '$e' over TLS"
    case $e in "") want=$((64 << 20)) ;; second) want=$((16 << 20)) ;; third) want=$((8 << 20)) ;; esac
    [ "$got" = "$want" ] || fail "multi-export: export '$e' is $got bytes over TLS, expected $want"
    name="$e" sock="$sock_me" srcdir="$srcdir" timeout 60 "$PYTHON" - <<'PY' || fail "multi-export: export '$e' in plaintext"
import os, struct, sys
sys.path.insert(0, os.environ["srcdir"])
import nbdraw
n = os.environ["name"].encode()
with nbdraw.Conn(os.environ["sock"]) as c:
    c.handshake()
    rep, _ = c.option(nbdraw.OPT_INFO, struct.pack(">I", len(n)) + n + struct.pack(">H", 0))
    assert rep == nbdraw.REP_ERR_TLS_REQD, nbdraw.rep_name(rep)
PY
  done
  echo "ok - multi-export: every export served over TLS, refused in plaintext"
fi

for n in xu xt xv pu pt on; do
  tls_alive $n
  grep -q -- "$HS_FAILED" "$tmp/$n.log" && { grep -- "$HS_FAILED" "$tmp/$n.log"; fail "$n logged a failed handshake"; }
done
echo "ok - no failed handshakes logged"
