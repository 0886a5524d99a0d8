#!/bin/bash
# A ublk device's counters after known I/O, through `ubdkit stats ID` (the
# server's control socket) and `ubdkit list`, in the VM: tests/vm/ublk-stats.sh.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
exec "$vm/vm-run" --timeout 300 --carry "$vm/lib.sh=/vmlib.sh" \
  --env VMLIB=/vmlib.sh "$vm/ublk-stats.sh"
