#!/bin/bash
# ublk features of newer kernels, each where the kernel offers it and its
# refusal where it does not, in one VM boot: zero copy (UBLK_F_AUTO_BUF_REG:
# data integrity, ext4, the registration fallback, no allocation per
# request, the copy path where it is off or not possible) and several
# threads per queue (UBLK_F_PER_IO_DAEMON) and the batch protocol
# (UBLK_F_BATCH_IO, with recovery and live upgrade).  Inner scripts:
# tests/vm/ublk-zero-copy.sh, ublk-queue-threads.sh, ublk-batch.sh (which
# runs ublk-ops-upgrade.sh on a batch device).
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
counter="${builddir:-.}/alloc-counter.so"
carry=()
[ -f "$counter" ] && carry=(--carry "$counter=/alloc-counter.so")
exec "$vm/vm-run" --timeout 900 --carry fio --carry "$vm/lib.sh=/vmlib.sh" \
  --carry "$vm/ublk-ops-upgrade.sh=/vm-upgrade.sh" \
  "${carry[@]}" --env VMLIB=/vmlib.sh --env "UBDKIT_SANITIZED=${UBDKIT_SANITIZED:-no}" \
  "$vm/ublk-zero-copy.sh" "$vm/ublk-queue-threads.sh" "$vm/ublk-batch.sh"
