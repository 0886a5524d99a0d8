#!/usr/bin/env bash
# -u/-g: the server drops to nobody:nogroup (as /proc says: uid, gid and
# supplementary groups), still serves reads and writes, and its Unix
# socket and pidfile, in a directory nobody may not write, are removed at
# exit; an unknown user or group is a usage error.  --unix-mode and
# --unix-group give the socket those permissions.
source "${srcdir:-.}/functions.sh"
requires_root
requires $NBDSH -c pass
getent passwd nobody >/dev/null || skip "no user 'nobody'"
getent group nogroup >/dev/null || skip "no group 'nogroup'"
uid=$(id -u nobody)
gid=$(getent group nogroup | cut -d: -f3)
make_tmpdir                     # mode 0700, root's: nobody cannot unlink here
export tmp

# The --run command starts just before the drop, so /proc is read after a
# client was served: no client is accepted before the drop.
$UBDKIT serve --log=stderr -U "$tmp/sock" -P "$tmp/pid" -u nobody -g nogroup --run '
  $NBDSH -u "$uri" -c "
buf = bytes(range(256)) * 64
h.pwrite(buf, 4096)
assert h.pread(len(buf), 4096) == buf
" && grep -E "^(Uid|Gid|Groups):" /proc/$PPID/status > "$tmp/status" && test -S "$unixsocket" && test -s "$tmp/pid"' memory size=1M \
    2> "$tmp/log" || fail "serve -u nobody -g nogroup failed: $(cat "$tmp/log")"
grep -Eq "^Uid:[[:space:]]+$uid[[:space:]]+$uid[[:space:]]+$uid[[:space:]]+$uid\$" "$tmp/status" ||
  fail "not running as uid $uid: $(cat "$tmp/status")"
grep -Eq "^Gid:[[:space:]]+$gid[[:space:]]+$gid[[:space:]]+$gid[[:space:]]+$gid\$" "$tmp/status" ||
  fail "not running as gid $gid: $(cat "$tmp/status")"
grep -Eq "^Groups:[[:space:]]+$gid[[:space:]]*\$" "$tmp/status" ||
  fail "supplementary groups not dropped: $(cat "$tmp/status")"
grep -q "running as uid $uid gid $gid" "$tmp/log" || fail "no drop in the log"
[ ! -e "$tmp/sock" ] || fail "socket $tmp/sock left behind after -u nobody"
[ ! -e "$tmp/pid" ] || fail "pidfile $tmp/pid left behind after -u nobody"

# -u alone: the user's own primary group.  -U -: the private directory is
# removed too.
$UBDKIT serve -U - -u nobody --run '
  dirname "$unixsocket" > "$tmp/dir" &&
  $NBDSH -u "$uri" -c "assert h.pread(512, 0) == bytes(512)" &&
  grep -E "^(Uid|Gid):" /proc/$PPID/status > "$tmp/status"' memory size=1M \
    2> "$tmp/log" || fail "serve -U - -u nobody failed: $(cat "$tmp/log")"
pgid=$(id -g nobody)
grep -Eq "^Gid:[[:space:]]+$pgid[[:space:]]" "$tmp/status" ||
  fail "-u nobody: gid is not nobody's primary group $pgid: $(cat "$tmp/status")"
[ ! -e "$(cat "$tmp/dir")" ] || fail "-U - directory $(cat "$tmp/dir") left behind"

# Unknown user or group: exit status 2, one line naming it.
for args in "-u no-such-user-xyz" "-g no-such-group-xyz" "--user=no-such-user-xyz"; do
  status=0
  $UBDKIT serve -U - $args memory size=1M 2> "$tmp/err" || status=$?
  [ $status -eq 2 ] || fail "$args: exit status $status, expected 2"
  [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q "no such" "$tmp/err" ||
    fail "$args: unclear error: $(cat "$tmp/err")"
done

# --unix-mode, --unix-group.
for mode in 600 660; do
  $UBDKIT serve -U "$tmp/sock" --unix-mode 0$mode --run '
    stat -c %a "$unixsocket" > "$tmp/mode"' memory size=1M ||
    fail "--unix-mode 0$mode failed"
  [ "$(cat "$tmp/mode")" = $mode ] ||
    fail "--unix-mode 0$mode: socket mode is $(cat "$tmp/mode")"
done
$UBDKIT serve -U "$tmp/sock" --unix-mode 0660 --unix-group nogroup --run '
  stat -c "%a %g" "$unixsocket" > "$tmp/mode"' memory size=1M ||
  fail "--unix-group nogroup failed"
[ "$(cat "$tmp/mode")" = "660 $gid" ] ||
  fail "--unix-mode 0660 --unix-group nogroup: $(cat "$tmp/mode")"
for args in "--unix-mode 0999" "--unix-mode rw" "--unix-group no-such-group-xyz"; do
  status=0
  $UBDKIT serve -U - $args memory size=1M 2> "$tmp/err" || status=$?
  [ $status -eq 2 ] || fail "$args: exit status $status, expected 2"
done
status=0
$UBDKIT serve -p 0 --unix-mode 0600 memory size=1M 2> "$tmp/err" || status=$?
[ $status -eq 2 ] || fail "--unix-mode without -U: exit status $status"
