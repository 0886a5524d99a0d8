#!/usr/bin/env bash
# ubdkit serve under valgrind (memcheck, full leak check) through a short
# nbdsh session (every command, structured and simple replies) and an
# nbdcopy round trip, on memory and file backends, ending through --run:
# any memcheck error or leak fails the test.
# --no-mlock: mlockall of valgrind's own huge mappings is slow or fails.
#
# Valgrind runs one thread at a time, and some versions (3.19, Debian 12)
# do not treat io_uring_enter as a blocking system call (KDE bug 463859):
# a loop thread waiting in it would keep the lock and stop every other
# thread.  So under valgrind (RUNNING_ON_VALGRIND, lib/core/loop.c) loops
# submit without waiting and wait in poll(2) on the ring fd instead.  A
# 60-second probe still guards against a build without <valgrind/valgrind.h>
# (configure says "checking for valgrind/valgrind.h"), where that cannot
# work.  SIGKILL: a hung process cannot act on SIGTERM, which ubdkit reads
# from a signalfd.
source "${srcdir:-.}/functions.sh"
requires_prog valgrind
requires_prog nbdcopy
requires $NBDSH -c pass
[ "${UBDKIT_SANITIZED:-no}" = no ] || skip "valgrind cannot run sanitizer builds"
make_tmpdir
export tmp

cat > "$tmp/session.py" <<'PY'
import os
M = 1 << 20
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(os.environ["uri"])
h.set_strict_mode(0)
data = os.urandom(3 * M + 17)
h.pwrite(data, 4095)
assert h.pread(len(data), 4095) == data
assert h.pread(M, 4095, nbd.CMD_FLAG_DF) == data[:M]
h.pwrite(data[:4096], 8 * M, nbd.CMD_FLAG_FUA)
h.flush()
h.trim(M, 4 * M)
h.zero(M, 5 * M)
h.zero(4096, 6 * M, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
h.cache(M, 0)
h.block_status(8 * M, 0, lambda ctx, off, e, err: 0)
try:
    h.pread(512, h.get_size())
    raise AssertionError("out-of-range read accepted")
except nbd.Error:
    pass
h.shutdown()

h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(os.environ["uri"])
assert h.pread(len(data), 4095) == data
h.shutdown()
print("ok")
PY
status=0
timeout -s KILL 60 valgrind --quiet "$UBDKIT" serve --no-mlock -U - null size=1M \
  --run true > /dev/null 2>&1 || status=$?
[ $status -ne 137 ] ||
  skip "ubdkit hangs under $(valgrind --version) in io_uring_enter (KDE bug 463859): built without <valgrind/valgrind.h>?"
[ $status -eq 0 ] || fail "valgrind probe: ubdkit serve --run true exited $status"

head -c $((4 * 1024 * 1024)) /dev/urandom > "$tmp/src"
truncate -s 16M "$tmp/src"

# vg_serve NAME BACKEND...: serve under valgrind, run the session.
vg_serve () {
  local name=$1 status=0
  shift
  valgrind --quiet --error-exitcode=99 --leak-check=full \
    --log-file="$tmp/vg-$name.log" \
    "$UBDKIT" serve --no-mlock -U - --run '
      uri="$uri" $NBDSH -c "exec(open(\"$tmp/session.py\").read())" > "$tmp/out" &&
      nbdcopy "$tmp/src" "$uri" && nbdcopy "$uri" "$tmp/copy" &&
      cmp "$tmp/src" "$tmp/copy"' "$@" || status=$?
  if [ -s "$tmp/vg-$name.log" ]; then
    cat "$tmp/vg-$name.log"
  fi
  [ $status -ne 99 ] || fail "$name: valgrind found errors (above)"
  [ $status -eq 0 ] || fail "$name: the session failed (exit $status)"
  [ "$(cat "$tmp/out")" = ok ] || fail "$name: nbdsh session: $(cat "$tmp/out")"
  echo "$name: valgrind clean"
}

vg_serve memory memory size=16M
truncate -s 16M "$tmp/disk.img"
vg_serve file file file="$tmp/disk.img"
