#!/usr/bin/env bash
# tls-setup.sh DIR: the certificates and keys of the TLS tests (certtool
# and psktool, Debian's gnutls-bin), made fresh in DIR in about a second
# (ECDSA P-256 keys):
#
#   DIR/server/    ca-cert.pem server-cert.pem server-key.pem: a server
#                  directory in nbdkit's layout (--tls-certificates DIR),
#                  the certificate for localhost, 127.0.0.1 and ::1
#   DIR/client/    ca-cert.pem client-cert.pem client-key.pem: a client
#                  (libnbd's tls-certificates= layout, qemu's tls-creds-x509
#                  dir=), DN "CN=client1,O=ubdkit test"
#   DIR/client2/   the same CA, DN "CN=client2,O=ubdkit test"
#   DIR/otherca/   a client whose certificate and CA are another CA's: it
#                  trusts no server of DIR/server and no server trusts it
#   DIR/expired/   a server directory whose certificate expired in 2021
#   DIR/noclient/  ca-cert.pem only: a client with no certificate of its own
#   DIR/keys.psk   PSK file (psktool): alice and bob
#   DIR/wrong.psk  alice with another key
#
# Run it, or source it and call tls_setup DIR.  Both also set (when sourced)
# TLS_DN1 and TLS_DN2, the two client DNs as GnuTLS prints them.
TLS_DN1='CN=client1,O=ubdkit test'
TLS_DN2='CN=client2,O=ubdkit test'

# _tls_key FILE: a new ECDSA private key.
_tls_key () {
  certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 \
    --outfile "$1" 2>/dev/null
}

# _tls_ca DIR NAME: a self-signed CA (DIR/ca-cert.pem, DIR/ca-key.pem).
_tls_ca () {
  _tls_key "$1/ca-key.pem" || return 1
  cat > "$1/ca.info" <<TPL
cn = $2
ca
cert_signing_key
expiration_days = 3650
TPL
  certtool --generate-self-signed --load-privkey "$1/ca-key.pem" \
    --template "$1/ca.info" --outfile "$1/ca-cert.pem" 2>/dev/null
}

# _tls_cert CADIR OUT KEY TEMPLATE-LINES: a certificate signed by CADIR's CA.
_tls_cert () {
  local ca=$1 out=$2 key=$3
  shift 3
  _tls_key "$key" || return 1
  printf '%s\n' "$@" > "$out.info"
  certtool --generate-certificate --load-privkey "$key" \
    --load-ca-certificate "$ca/ca-cert.pem" --load-ca-privkey "$ca/ca-key.pem" \
    --template "$out.info" --outfile "$out" 2>/dev/null
  rm -f "$out.info"
}

tls_setup () {
  local d=$1 c
  command -v certtool >/dev/null && command -v psktool >/dev/null ||
    { echo "tls_setup: certtool and psktool (gnutls-bin) are needed" >&2; return 1; }
  mkdir -p "$d"/{ca,ca2,server,client,client2,otherca,expired,noclient} || return 1
  _tls_ca "$d/ca" "ubdkit test CA" || return 1
  _tls_ca "$d/ca2" "ubdkit other test CA" || return 1
  for c in server client client2 expired noclient; do
    cp "$d/ca/ca-cert.pem" "$d/$c/"
  done
  cp "$d/ca2/ca-cert.pem" "$d/otherca/"
  _tls_cert "$d/ca" "$d/server/server-cert.pem" "$d/server/server-key.pem" \
    'organization = ubdkit test' 'cn = localhost' 'dns_name = localhost' \
    'ip_address = 127.0.0.1' 'ip_address = ::1' \
    tls_www_server encryption_key signing_key 'expiration_days = 3650' || return 1
  _tls_cert "$d/ca" "$d/expired/server-cert.pem" "$d/expired/server-key.pem" \
    'organization = ubdkit test' 'cn = localhost' 'dns_name = localhost' \
    'ip_address = 127.0.0.1' 'ip_address = ::1' \
    tls_www_server encryption_key signing_key \
    'activation_date = "2020-01-01 00:00:00"' \
    'expiration_date = "2021-01-01 00:00:00"' || return 1
  _tls_cert "$d/ca" "$d/client/client-cert.pem" "$d/client/client-key.pem" \
    'organization = ubdkit test' 'cn = client1' \
    tls_www_client encryption_key signing_key 'expiration_days = 3650' || return 1
  _tls_cert "$d/ca" "$d/client2/client-cert.pem" "$d/client2/client-key.pem" \
    'organization = ubdkit test' 'cn = client2' \
    tls_www_client encryption_key signing_key 'expiration_days = 3650' || return 1
  _tls_cert "$d/ca2" "$d/otherca/client-cert.pem" "$d/otherca/client-key.pem" \
    'organization = ubdkit test' 'cn = client1' \
    tls_www_client encryption_key signing_key 'expiration_days = 3650' || return 1
  rm -f "$d/keys.psk" "$d/wrong.psk"
  psktool -u alice -p "$d/keys.psk" >/dev/null || return 1
  psktool -u bob -p "$d/keys.psk" >/dev/null || return 1
  psktool -u alice -p "$d/wrong.psk" >/dev/null || return 1
  chmod 600 "$d"/*/*-key.pem "$d"/*.psk
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  [ $# = 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
  tls_setup "$1"
fi
