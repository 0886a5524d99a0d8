#!/bin/bash
# In a VM with swap on a ublk device: a hog beyond RAM + swap is what the
# OOM killer takes; the ubdkit server lives and serves.  tests/vm/swap-oom.sh.
VM_SWAP_SCENARIOS=oom exec bash "${srcdir:-.}/test-vm-swap.sh"
