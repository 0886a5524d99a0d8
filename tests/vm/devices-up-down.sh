# `ubdkit up` and `ubdkit down`: what ubdkit-devices.service runs at boot
# and at shutdown, with a config directory (there is no systemd as init in
# the VM).  A fixed id, a file-backed ext4 that outlives down and up, a
# device the kernel numbers, idempotence, `down` refusing a mounted device
# unless --force, and config errors.
. "$VMLIB"
cfg=/tmp/devices.d
mkdir -p $cfg
dd if=/dev/zero of=/tmp/data.img bs=1M count=0 seek=64 2>/dev/null
cat > $cfg/data.conf <<EOF
# the file-backed device, always /dev/ublkb7
BACKEND=file
ID=7
OPTIONS=--queues 2 --depth 32
file=/tmp/data.img
EOF
printf 'BACKEND=memory\nsize=32M\n' > $cfg/scratch.conf
ndev () { ls /sys/class/ublk-char 2>/dev/null | wc -l; }

# Captured as a unit's ExecStart (or a shell's $(...)) would: it returns.
out=$("$UBDKIT" up --config-dir $cfg --all 2>/tmp/up.err) ||
  { cat /tmp/up.err; fail "up --all"; }
echo "$out" | grep -qx "data: /dev/ublkb7" || fail "up: data not /dev/ublkb7: $out"
scratch=$(echo "$out" | sed -n 's/^scratch: //p')
[ -b /dev/ublkb7 ] && [ -b "$scratch" ] || fail "up: devices missing: $out"
[ "$(cat /sys/block/ublkb7/size)" = 131072 ] || fail "/dev/ublkb7 is not 64M"
[ "$(cat /sys/block/${scratch#/dev/}/size)" = 65536 ] || fail "$scratch is not 32M"
[ "$(cat /run/ubdkit/devices/scratch)" = "${scratch#/dev/ublkb}" ] ||
  fail "up did not record scratch's id"
ok "up --all: data as /dev/ublkb7, scratch as $scratch"

out=$("$UBDKIT" up --config-dir $cfg --all) || fail "up --all again"
echo "$out" | grep -q "data: already up" || fail "second up: $out"
[ "$(ndev)" = 2 ] || fail "second up made more devices: $(ndev)"
ok "up again: nothing new"

mkfs.ext4 -q -F /dev/ublkb7 || fail "mkfs.ext4"
mkdir -p /mnt/d && mount /dev/ublkb7 /mnt/d || fail "mount"
echo persistent > /mnt/d/file
if "$UBDKIT" down --config-dir $cfg data 2>/tmp/down.err; then
  fail "down deleted a mounted device"
fi
grep -q "in use\|is open" /tmp/down.err || { cat /tmp/down.err; fail "down: no reason given"; }
[ -b /dev/ublkb7 ] && [ "$(cat /mnt/d/file)" = persistent ] ||
  fail "a refused down touched the device"
ok "down refuses a mounted device: $(head -1 /tmp/down.err)"

umount /mnt/d
pid=$(server_pid /dev/ublkb7)
"$UBDKIT" down --config-dir $cfg --all > /tmp/down.out || fail "down --all"
[ "$(ndev)" = 0 ] || fail "down --all left $(ndev) devices"
[ ! -e /run/ubdkit/devices/scratch ] || fail "down left scratch's record"
wait_gone () {
  for _i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
  fail "server $1 still running after down"
}
wait_gone "$pid"
out=$("$UBDKIT" down --config-dir $cfg --all) || fail "down --all again"
echo "$out" | grep -q "data: not up" || fail "second down: $out"
ok "down --all after umount: devices and servers gone; again: nothing to do"

# As after a reboot: the same device number, the same filesystem.
out=$("$UBDKIT" up --config-dir $cfg data) || fail "up data"
[ "$out" = "data: /dev/ublkb7" ] || fail "up data: $out"
e2fsck -f -n /dev/ublkb7 >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck"; }
mount /dev/ublkb7 /mnt/d && [ "$(cat /mnt/d/file)" = persistent ] ||
  fail "the filesystem did not come back with the device"
"$UBDKIT" down --config-dir $cfg --force data || fail "down --force"
[ ! -e /sys/class/ublk-char/ublkc7 ] || fail "down --force left the device"
umount -l /mnt/d 2>/dev/null || true
ok "up again: /dev/ublkb7 with its filesystem; down --force deletes it mounted"

# Bad configs: one line each, exit status 2, nothing created.
bad () {
  printf "$2" > $cfg/bad.conf
  if "$UBDKIT" up --config-dir $cfg bad 2>/tmp/bad.err; then fail "accepted: $2"; fi
  grep -q "$1" /tmp/bad.err || { cat /tmp/bad.err; fail "no '$1' for: $2"; }
  [ "$(ndev)" = 0 ] || fail "a bad config made a device"
}
bad "bad.conf:2: unknown key" 'BACKEND=memory\nSIZE=1M\n'
bad "no BACKEND=" 'size=1M\n'
bad "ID: expected a device number" 'BACKEND=memory\nID=seven\nsize=1M\n'
bad "bad.conf:1: expected KEY=VALUE" 'memory size=1M\n'
bad "ubdkit add failed" 'BACKEND=nosuch\n'
"$UBDKIT" up --config-dir $cfg ../x 2>/tmp/bad.err && fail "accepted ../x"
grep -q "invalid device name" /tmp/bad.err || fail "name: $(cat /tmp/bad.err)"
"$UBDKIT" up --config-dir $cfg 2>/tmp/bad.err && fail "up without names"
grep -q "usage" /tmp/bad.err || fail "no usage line"
ok "bad configs refused, each with its file and line"
