#!/bin/bash
# The systemd units as `make install` puts them: systemd-analyze verify
# on each (templates as an instance), with ExecStart= pointing at the
# binary installed under DESTDIR; the generator's drop-in for devices
# with a fixed ID, verified with the unit; a broken unit fails verify, so
# the check can fail.  The host's /etc and unit directories are not touched.
source "${srcdir:-.}/functions.sh"
requires_prog systemd-analyze
top=${builddir:-.}/..
[ -f "$top/Makefile" ] || skip "no build tree at $top"
grep -q '^systemdsystemunitdir = /' "$top/Makefile" ||
  skip "configured without systemd units (--with-systemdsystemunitdir=no)"
make_tmpdir
root=$tmp/root
# Run from `make check`, a make here would inherit its flags (-w prints
# "Entering directory" into what we read, and the jobserver): start afresh.
make () { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make "$@"; }
make -s -C "$top" install DESTDIR="$root" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "make install DESTDIR=$root"; }
unitdir=$(sed -n 's/^systemdsystemunitdir = //p' "$top/Makefile")
gendir=$(sed -n 's/^systemdgeneratordir = //p' "$top/Makefile")
bindir=$(make -s --no-print-directory -C "$top" -f Makefile -f - print-bindir <<'EOF'
print-bindir:
	@echo $(bindir)
EOF
)
for u in ubdkit-serve@.service ubdkit-serve@.socket ubdkit-devices.service; do
  [ -f "$root$unitdir/$u" ] || fail "make install did not install $unitdir/$u"
done
[ -x "$root$gendir/ubdkit-devices-generator" ] || fail "no generator in $gendir"
[ -x "$root$bindir/ubdkit" ] || fail "no $bindir/ubdkit"
grep -q "^ExecStart=$bindir/ubdkit serve " "$root$unitdir/ubdkit-serve@.service" ||
  fail "ExecStart= does not name $bindir/ubdkit"

# Verify copies whose ExecStart= names the DESTDIR binary (verify checks
# that it is executable); the rest of the system's units are the host's.
v=$tmp/units
mkdir -p "$v" "$tmp/devices.d"
cp "$root$unitdir"/ubdkit-* "$v/"
sed -i "s|$bindir/ubdkit|$root$bindir/ubdkit|" "$v"/*.service
printf 'BACKEND=file\nID=7\nfile=/x.img\n' > "$tmp/devices.d/fixed.conf"
printf 'BACKEND=memory\nsize=1G\n' > "$tmp/devices.d/any.conf"
printf 'BACKEND=memory\n  ID=12  \nsize=1G\n' > "$tmp/devices.d/blanks.conf"
UBDKIT_DEVICES_DIR=$tmp/devices.d "$root$gendir/ubdkit-devices-generator" "$v" ||
  fail "the generator failed"
dropin=$v/ubdkit-devices.service.d/50-blockdev.conf
grep -qx "Before=blockdev@dev-ublkb7.target" "$dropin" || fail "drop-in: $(cat "$dropin")"
grep -qx "Before=blockdev@dev-ublkb12.target" "$dropin" || fail "drop-in: $(cat "$dropin")"
[ "$(grep -c '^Before=' "$dropin")" = 2 ] || fail "a device without ID in: $(cat "$dropin")"
verify () {
  SYSTEMD_UNIT_PATH=$v: systemd-analyze verify --man=no "$@" >"$tmp/verify.out" 2>&1
}
verify ubdkit-devices.service ubdkit-serve@test.service ubdkit-serve@test.socket ||
  { cat "$tmp/verify.out"; fail "systemd-analyze verify"; }
echo "systemd-analyze verify: the 3 units and the generator's drop-in are clean"

# The check can fail: a unit naming a binary that is not there is caught.
sed "s|^ExecStart=$root$bindir/ubdkit|ExecStart=$tmp/nonexistent/ubdkit|" \
  "$v/ubdkit-devices.service" > "$v/ubdkit-broken.service"
if verify ubdkit-broken.service; then fail "verify passed a broken unit"; fi
grep -q "nonexistent/ubdkit is not executable" "$tmp/verify.out" ||
  fail "verify: $(cat "$tmp/verify.out")"
echo "a broken unit fails verify: $(head -1 "$tmp/verify.out")"
