#!/bin/bash
# ublk zero copy (UBLK_F_AUTO_BUF_REG) against the real kernel, in one VM
# boot: where the kernel offers it, data integrity, ext4, the registration
# fallback, no allocation per request, and the copy path where it is off
# or not possible; where it does not, the refusal of --zero-copy.  Inner
# script: tests/vm/ublk-zero-copy.sh.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
counter="${builddir:-.}/alloc-counter.so"
carry=()
[ -f "$counter" ] && carry=(--carry "$counter=/alloc-counter.so")
exec "$vm/vm-run" --timeout 600 --carry fio --carry "$vm/lib.sh=/vmlib.sh" \
  "${carry[@]}" --env VMLIB=/vmlib.sh --env "UBDKIT_SANITIZED=${UBDKIT_SANITIZED:-no}" \
  "$vm/ublk-zero-copy.sh"
