#!/bin/bash
# Crash recovery of ublk devices in the VM: the server is SIGKILLed three
# times under fio verify on ext4 and the supervisor brings it back each
# time with no error reaching the filesystem.  Inner script:
# tests/vm/ublk-recovery.sh.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
exec "$vm/vm-run" --timeout 400 --carry fio --carry "$vm/lib.sh=/vmlib.sh" \
  --env VMLIB=/vmlib.sh "$vm/ublk-recovery.sh"
