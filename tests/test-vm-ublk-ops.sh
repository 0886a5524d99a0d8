#!/bin/bash
# ublk control operations in one VM boot: resize (UPDATE_SIZE), del that
# refuses a busy device (TRY_STOP_DEV, or a check), --recovery=fail-io,
# live upgrade (QUIESCE_DEV).  Each inner script (tests/vm/ublk-ops-*.sh)
# asks `ubdkit features` what the kernel has and checks what ubdkit does
# with it, or the clear refusal without it: run with UBDKIT_VM_KERNEL=newest
# too.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
exec "$vm/vm-run" --timeout 900 --carry fio --carry resize2fs \
  --carry "$vm/lib.sh=/vmlib.sh" --env VMLIB=/vmlib.sh \
  "$vm/ublk-ops-resize.sh" "$vm/ublk-ops-del.sh" "$vm/ublk-ops-failio.sh" \
  "$vm/ublk-ops-upgrade.sh"
