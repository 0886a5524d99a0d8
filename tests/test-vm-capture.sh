#!/bin/bash
# `ubdkit add`, `upgrade` and `recover` leave nothing holding the caller's
# stdio, so $(... 2>&1) returns with the device path; logging to syslog
# and --log=FILE from both supervisor and server (tests/vm/ublk-capture.sh).
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
exec "$vm/vm-run" --timeout 400 --carry "$vm/lib.sh=/vmlib.sh" \
  --env VMLIB=/vmlib.sh "$vm/ublk-capture.sh"
