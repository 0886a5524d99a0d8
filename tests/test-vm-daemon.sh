#!/bin/bash
# ubdkit as a system daemon, against the real kernel, in one VM boot:
# - the commands ubdkit-devices.service runs (`ubdkit up` at boot, `ubdkit
#   down` at shutdown), and sd_notify from a supervised `ubdkit add
#   --foreground` (tests/vm/devices-*.sh).  The unit's ordering itself needs
#   systemd as init: see docs/systemd.md for what is and is not covered;
# - a ublk device's counters after known I/O, through `ubdkit stats ID`
#   and `ubdkit list` (tests/vm/ublk-stats.sh);
# - `ubdkit add`, `upgrade` and `recover` leave nothing holding the
#   caller's stdio, so $(... 2>&1) returns with the device path; logging to
#   syslog and --log=FILE from both supervisor and server
#   (tests/vm/ublk-capture.sh, last: it starts a syslogd).
source "${srcdir:-.}/functions.sh"
vm="$srcdir/vm"
listen="${builddir:-.}/notify-listen"
[ -x "$listen" ] || fail "$listen is not built (make check builds it)"
exec "$vm/vm-run" --timeout 900 \
  --carry "$vm/lib.sh=/vmlib.sh" --env VMLIB=/vmlib.sh \
  --carry "$listen=/ubdkit/notify-listen" --env NOTIFY_LISTEN=/ubdkit/notify-listen \
  "$vm/devices-up-down.sh" "$vm/devices-notify.sh" "$vm/ublk-stats.sh" "$vm/ublk-capture.sh"
