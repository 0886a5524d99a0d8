#!/usr/bin/env bash
# nbdkit plugins through ubdkit: writes read back; a plugin's errors reach
# the client with the errno the plugin chose; a plugin refusing its
# configuration is a clear message and exit status 1; only nbdkit_*
# symbols are exported.
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires $NBDSH -c pass
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
make_tmpdir
export tmp

# Exported symbols: exactly the nbdkit_* functions plugins may call (glibc
# variables copied into the executable, name@GLIBC, are not ours).
# Sanitizer builds add their own (__asan_*, __ubsan_*).
nm -D --defined-only "$UBDKIT" | awk '{print $3}' | grep -v '@' |
  grep -Ev '^__(asan|ubsan|lsan|sanitizer)_' | sort > "$tmp/syms"
grep -v '^nbdkit_' "$tmp/syms" && fail "ubdkit exports symbols other than nbdkit_*"
for h in /usr/include/nbdkit-common.h /usr/include/nbdkit-plugin.h; do
  [ -f "$h" ] || continue
  grep -o 'NBDKIT_EXTERN_DECL *([^,]*, *nbdkit_[a-z0-9_]*' "$h" |
    sed 's/.*, *//' | while read -r fn; do
      grep -qx "$fn" "$tmp/syms" || fail "$fn (declared in $h) is not exported"
    done
done

# Write and read back: memory and file plugins.
truncate -s 4M "$tmp/disk.img"
for backend in "nbdkit:memory size=4M" "nbdkit:file $tmp/disk.img"; do
  $UBDKIT serve -U - $backend --run '$NBDSH -u "$uri" -c "
buf = bytes(range(256)) * 64
h.pwrite(buf, 12345)
h.pwrite(buf, 65536, nbd.CMD_FLAG_FUA)
h.zero(4096, 200000)
h.flush()
assert h.pread(len(buf), 12345) == buf
assert h.pread(len(buf), 65536) == buf
assert h.pread(4096, 200000) == bytes(4096)
"' 2>"$tmp/err" || fail "$backend: write/read back failed: $(cat "$tmp/err")"
done
cmp -s -n 16384 -i 12345:0 "$tmp/disk.img" <("$PYTHON" -c '
import sys; sys.stdout.buffer.write(bytes(range(256)) * 64)') ||
  fail "file plugin: the data did not reach the file"

# A writable sh plugin whose pread fails with EIO past 1 MiB and whose
# pwrite fails with ENOSPC past 2 MiB; errno_is_preserved is not set for
# sh, so the errno comes from the script's message (nbdkit_set_error).
cat > "$tmp/err.sh" <<'SH'
#!/bin/sh
f="$tmp/sh.img"
case "$1" in
  get_size) echo 4M ;;
  can_write) exit 0 ;;
  pread)
    if [ "$4" -ge 1048576 ]; then echo "EIO oops" >&2; exit 1; fi
    dd if="$f" skip="$4" count="$3" iflag=skip_bytes,count_bytes status=none ;;
  pwrite)
    # Consume the data first: exiting with it unread is a broken pipe (EIO).
    if [ "$4" -ge 2097152 ]; then cat >/dev/null; echo "ENOSPC disk full" >&2; exit 1; fi
    dd of="$f" seek="$4" oflag=seek_bytes conv=notrunc status=none ;;
  *) exit 2 ;;
esac
SH
chmod +x "$tmp/err.sh"
truncate -s 4M "$tmp/sh.img"
$UBDKIT serve -U - nbdkit:sh "$tmp/err.sh" --run '$NBDSH -u "$uri" -c "
import errno
h.pwrite(b\"abc\" * 100, 1000)
assert h.pread(300, 1000) == b\"abc\" * 100
for (fn, want) in ((lambda: h.pread(512, 1 << 20), errno.EIO),
                   (lambda: h.pwrite(bytes(512), 3 << 20), errno.ENOSPC)):
    try:
        fn()
    except nbd.Error as e:
        assert e.errnum == want, (e.errnum, want)
    else:
        assert False, \"no error\"
"' 2>"$tmp/err" || fail "sh errors: $(cat "$tmp/err")"
grep -q "oops" "$tmp/err" || fail "the plugin's error message was not logged"

# eval: the same through nbdkit_set_error's per-thread value.
$UBDKIT serve -U - nbdkit:eval get_size='echo 1M' \
    pread='echo "EPERM no" >&2; exit 1' --run '$NBDSH -u "$uri" -c "
import errno
try:
    h.pread(512, 0)
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e.errnum
else:
    assert False
"' 2>"$tmp/err" || fail "eval EPERM: $(cat "$tmp/err")"

# A plugin whose open fails refuses that client only: the option is
# refused (a clear error, not a hang) and the next client is served.
"$UBDKIT" serve -U - nbdkit:eval get_size='echo 1M' \
    pread='head -c $3 /dev/zero' \
    open='if [ -e "$tmp/refuse" ]; then echo "EACCES no" >&2; exit 1; fi; echo h' \
    --run '
touch "$tmp/refuse"
! timeout 20 nbdinfo --size "$uri" 2>"$tmp/refused" || exit 1
rm "$tmp/refuse"
timeout 20 nbdinfo --size "$uri"' >"$tmp/out" 2>"$tmp/err" ||
  fail "refused open: $(cat "$tmp/err")"
grep -q "handshake" "$tmp/refused" ||
  fail "refused open: client saw: $(cat "$tmp/refused")"
[ "$(cat "$tmp/out")" = 1048576 ] || fail "next client after a refused open: $(cat "$tmp/out")"
grep -q "open failed" "$tmp/err" || fail "refused open: no log line: $(cat "$tmp/err")"

# Configuration failures: exit 1 (not 2, the usage error) with the
# plugin's own message and ours.
expect_config_failure () {
  local status=0
  timeout 20 "$UBDKIT" serve -U - "$@" --run true >/dev/null 2>"$tmp/err" ||
    status=$?
  [ $status -eq 1 ] || fail "$*: exit status $status, expected 1: $(cat "$tmp/err")"
  grep -q "$want" "$tmp/err" || fail "$*: no '$want' in: $(cat "$tmp/err")"
}
want="could not parse size" expect_config_failure nbdkit:memory size=banana
want="rejected 'size=banana'" expect_config_failure nbdkit:memory size=banana
want="cannot open plugin" expect_config_failure nbdkit:no-such-plugin
# A bare first argument is script= (nbdkit's rule), which eval refuses
# as nbdkit does; a bare argument after the first is no key=value.
want="callback 'script' is unknown" expect_config_failure nbdkit:eval bare
want="expected key=value" expect_config_failure nbdkit:eval get_size='echo 1M' bare
want="does not need command line" expect_config_failure nbdkit:example1 x=1
want="bad config" expect_config_failure nbdkit:eval get_size='echo 1M' \
  pread='exit 1' config_complete='echo "EINVAL bad config" >&2; exit 1'
echo "$0: ok"
