#!/usr/bin/env bash
# VM smoke test: the test kernel boots, ublk_drv and nbd load, and ubdkit
# runs as root there with every capability: --io-flusher=require starts,
# and every thread of a running server has PF_MEMALLOC_NOIO and
# PF_LOCAL_THROTTLE (what PR_SET_IO_FLUSHER sets) in /proc/PID/task/*/stat.
# It also checks vm-run itself: a guest whose kernel crashes while booting
# is booted again (UBDKIT_VM_BOOT_TRIES), and the run still fails.
source "${srcdir:-.}/functions.sh"
make_tmpdir

cat > "$tmp/smoke.sh" <<'EOF'
fail () { echo "FAIL: $*"; exit 1; }
[ -c /dev/ublk-control ] || fail "/dev/ublk-control missing after insmod ublk_drv"
[ -b /dev/nbd0 ] || fail "/dev/nbd0 missing after insmod nbd"
echo "ok - /dev/ublk-control and /dev/nbd0 exist"

"$UBDKIT" serve --io-flusher=require -U - null size=1M --run 'true' ||
  fail "ubdkit serve --io-flusher=require ... --run true: exit $?"
echo "ok - serve --io-flusher=require --run true exits 0"

# flags_of STATFILE: field 9 (flags), counted after the ")" that ends comm.
flags_of () { sed 's/.*) //' "$1" | cut -d' ' -f7; }

"$UBDKIT" serve --io-flusher=require -U /tmp/smoke.sock --daemonize \
    -P /tmp/smoke.pid memory size=16M 2>/tmp/serve.err ||
  { cat /tmp/serve.err; fail "ubdkit serve --daemonize failed"; }
pid=$(cat /tmp/smoke.pid) || fail "no pidfile"
cat /tmp/serve.err
bad=0 n=0
for st in /proc/$pid/task/*/stat; do
  f=$(flags_of "$st")
  tid=${st#/proc/$pid/task/}; tid=${tid%/stat}
  comm=$(cat /proc/$pid/task/$tid/comm)
  n=$((n + 1))
  printf 'thread %s (%s): flags 0x%08x\n' "$tid" "$comm" "$f"
  [ $((f & 0x00080000)) -ne 0 ] || { echo "  PF_MEMALLOC_NOIO missing"; bad=1; }
  [ $((f & 0x00100000)) -ne 0 ] || { echo "  PF_LOCAL_THROTTLE missing"; bad=1; }
done
[ $n -ge 2 ] || fail "expected the main thread and loop threads, found $n thread(s)"
kill -TERM "$pid"
for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "server $pid still running 5 s after SIGTERM"
[ -e /tmp/smoke.pid ] && fail "pidfile left behind after SIGTERM"
[ $bad = 0 ] || fail "some of the $n threads lack the IO_FLUSHER flags"
echo "ok - all $n threads have PF_MEMALLOC_NOIO|PF_LOCAL_THROTTLE"

if "$UBDKIT" features > /tmp/features 2>&1; then
  echo "ubdkit features: $(tr '\n' ' ' < /tmp/features)"
else
  echo "note: ubdkit features failed: $(cat /tmp/features)"
fi
EOF

"$srcdir/vm/vm-run" --timeout 120 "$tmp/smoke.sh" 2> "$tmp/smoke.err" ||
  { st=$?; cat "$tmp/smoke.err" >&2; exit $st; }
cat "$tmp/smoke.err" >&2

# The harness itself: a guest kernel that crashes while booting (here made
# to, by naming an init that does not exist) is booted again, up to
# UBDKIT_VM_BOOT_TRIES times, and the run still fails after the last one.
echo 'echo never' > "$tmp/never.sh"
st=0
UBDKIT_VM_BOOT_TRIES=2 "$srcdir/vm/vm-run" --timeout 60 --append rdinit=/nonexistent \
  "$tmp/never.sh" > "$tmp/crash.out" 2> "$tmp/crash.err" || st=$?
[ $st = 1 ] || { cat "$tmp/crash.err" >&2; fail "vm-run on a guest that cannot boot: exit $st, expected 1"; }
n=$(grep -c 'crashed while booting, before any test began' "$tmp/crash.err") || true
[ "$n" = 1 ] || { cat "$tmp/crash.err" >&2; fail "expected exactly one retry of the crashed boot, saw ${n:-0}"; }
grep -q 'FAIL: no END marker for never.sh' "$tmp/crash.err" ||
  { cat "$tmp/crash.err" >&2; fail "vm-run did not report the test that never ran"; }
echo "ok - a boot-time kernel crash is retried once (UBDKIT_VM_BOOT_TRIES=2), then fails"
! grep -q 'crashed while booting' "$tmp/smoke.err" ||
  echo "note: the smoke run above needed more than one boot"
