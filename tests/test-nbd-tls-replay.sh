#!/usr/bin/env bash
# The fuzz target's sessions again with TLS offered and with TLS required
# (FUZZ_NBD_TLS, PSK credentials): fuzz/corpus-tls's seeds (options before
# STARTTLS, EXPORT_NAME without TLS, STARTTLS followed by garbage, by a
# truncated ClientHello, by pipelined plaintext options) and the whole
# plaintext corpus, which a TLS-requiring server must refuse without
# hanging or leaking.  unit-nbd-replay aborts on a hang or a crash.
source "${srcdir:-.}/functions.sh"
replay="${builddir:-.}/unit-nbd-replay"
[ -x "$replay" ] || fail "$replay is not built"
top="$srcdir/.."
for mode in require on; do
  FUZZ_NBD_TLS=$mode FUZZ_NBD_TIMEOUT=20 "$replay" "$top/fuzz/corpus-tls" \
    "$top/fuzz/corpus" "$top/fuzz/regressions" ||
    fail "--tls=$mode: a replayed session crashed or hung"
  echo "ok - --tls=$mode: every session ended"
done
