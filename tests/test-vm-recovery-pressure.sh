#!/bin/bash
# Crash recovery of a ublk device under memory pressure, in a 320 MiB VM:
# fio verify on ext4 through the page cache while the server is SIGKILLed
# three times and a memory hog of more than the free memory loops with swap
# on a second virtio disk.  Inner script: tests/vm/ublk-recovery-pressure.sh.
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
memhog="${builddir:-.}/memhog"
[ -x "$memhog" ] || fail "$memhog not built (make check builds it)"
disks=$(mktemp -d "${builddir:-.}/vm-disks.XXXXXX")
cleanup_fn "rm -rf '$disks'"
truncate -s 512M "$disks/data.img"
truncate -s 512M "$disks/swap.img"
"$vm/vm-run" --mem "${VM_REC_MEM:-320}" --timeout 600 \
  --disk "$disks/data.img" --disk "$disks/swap.img" \
  --carry fio --carry "$vm/lib.sh=/vmlib.sh" --carry "$memhog=/ubdkit/memhog" \
  --env VMLIB=/vmlib.sh ${UBDKIT_PROT:+--env "UBDKIT_PROT=$UBDKIT_PROT"} \
  "$vm/ublk-recovery-pressure.sh"
