/* `ubdkit up` and `ubdkit down`: persistent ublk devices, one config file
 * each in a directory (default DEVICES_CONFIG_DIR), for boot and shutdown
 * (systemd/ubdkit-devices.service; docs/systemd.md has the format). */
#ifndef UBDKIT_DEVICES_H
#define UBDKIT_DEVICES_H

#define DEVICES_CONFIG_DIR "/etc/ubdkit/devices.d"
/* NAME -> device id of each device `up` made, for `down`. */
#define DEVICES_STATE_DIR "/run/ubdkit/devices"

/* Each takes argv after the command name and returns the exit status:
 * 0, 1 if any device failed, 2 for a usage or config error. */
int cmd_up (int argc, char **argv);
int cmd_down (int argc, char **argv);

#endif
