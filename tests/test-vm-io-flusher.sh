#!/bin/bash
# In a VM: every thread of `ubdkit add` and `ubdkit serve` (io_uring workers
# included, with I/O running) is an IO_FLUSHER; --io-flusher=off leaves the
# flags clear; oom_score_adj and mlock as asked.  Inner: tests/vm/fp-io-flusher.sh.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
# Sanitized builds cannot lock memory: the lock checks then say so and pass.
exec "$vm/vm-run" --mem 512 --timeout 240 --carry "$vm/lib.sh=/vmlib.sh" \
  --env VMLIB=/vmlib.sh --env UBDKIT_SANITIZED="${UBDKIT_SANITIZED:-no}" \
  "$vm/fp-io-flusher.sh"
