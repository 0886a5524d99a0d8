#!/usr/bin/env bash
# The kernel NBD client over TLS, kernel TLS on ubdkit's side, in the test
# VM (the host has no tls module): ubdkit serve --tls=require
# --tls-verify-peer X.509 on TCP; nbd-client with -certfile -keyfile
# -cacertfile -tlshostname attaches /dev/nbd0; ext4 made, written, fsck'd,
# checksums across a remount; then nbdinfo and nbdcopy over TLS read what
# nbd-client wrote and round-trip 32 MiB, and ubdkit's -v log says kTLS for
# those connections; --tls-ktls=off says userspace TLS records.  Inner script:
# tests/vm/nbd-client-tls.sh.  Certificates: tls-setup.sh, made here and
# carried in.
source "${srcdir:-.}/functions.sh"
source "$srcdir/tls-functions.sh"
requires_tls
requires_prog nbd-client
requires_prog nbdinfo
requires_prog nbdcopy
requires_prog mkfs.ext4
nbd-client -h 2>&1 | grep -q -- -certfile || skip "this nbd-client has no TLS"
make_tmpdir
tls_setup "$tmp/tls" || fail "tls-setup.sh failed"
chmod -R a+rX "$tmp/tls"

vm="$srcdir/vm"
# kTLS and the AEADs it seals with, in dependency order (a module the
# kernel has built in is not in its package, and is skipped).
mods=()
for m in crypto_null gcm gf128mul ghash-generic cryptd crypto_simd \
         aesni-intel libchacha chacha chacha_generic chacha-x86_64 libpoly1305 \
         poly1305_generic poly1305-x86_64 libchacha20poly1305 \
         chacha20poly1305 tls; do
  mods+=(--module "$m")
done
exec "$vm/vm-run" --mem 1536 --timeout 400 "${mods[@]}" \
  --carry "$vm/lib.sh=/vmlib.sh" --carry "$tmp/tls=/tmp/tls" \
  --carry nbdinfo --carry nbdcopy \
  --env VMLIB=/vmlib.sh --env TLSDIR=/tmp/tls \
  "$vm/nbd-client-tls.sh"
