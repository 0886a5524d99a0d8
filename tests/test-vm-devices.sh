#!/bin/bash
# Persistent devices: the commands ubdkit-devices.service runs (`ubdkit up`
# at boot, `ubdkit down` at shutdown) against the real kernel, in one VM
# boot.  The unit's ordering itself needs systemd as init: see
# docs/systemd.md for what is and is not covered.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
exec "$vm/vm-run" --timeout 600 \
  --carry "$vm/lib.sh=/vmlib.sh" --env VMLIB=/vmlib.sh \
  "$vm/devices-up-down.sh"
