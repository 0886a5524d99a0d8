#!/bin/bash
# ublk devices against the real kernel, in one VM boot: ext4, fio verify
# with two queues, discard/zero, del under load, several devices, read-only,
# backend errors.  Inner scripts: tests/vm/ublk-*.sh.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
# lib.sh goes to a fixed path: a build under /tmp would be hidden by the
# guest's own tmpfs on /tmp.
exec "$vm/vm-run" --timeout 600 --carry fio --carry "$vm/lib.sh=/vmlib.sh" \
  --env VMLIB=/vmlib.sh \
  "$vm/ublk-fs.sh" "$vm/ublk-fio.sh" "$vm/ublk-multi.sh" "$vm/ublk-del-busy.sh"
