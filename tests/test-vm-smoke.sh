#!/usr/bin/env bash
# VM smoke test: the test kernel boots, ublk_drv and nbd load, and ubdkit
# runs as root there with every capability: --io-flusher=require starts,
# and every thread of a running server has PF_MEMALLOC_NOIO and
# PF_LOCAL_THROTTLE (what PR_SET_IO_FLUSHER sets) in /proc/PID/task/*/stat.
# `ubdkit features` answers, with a name for every feature bit it knows.
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

# ubdkit features: "0xMASK NAME..." with one name per set bit.  Both test
# kernels answer GET_FEATURES (6.5 and later).  ubdkit names bits 0 to
# $named_bits; a bit it knows may never print as "bitN" (so on 7.3, whose
# bits go up to 20, none may), and a later kernel's unknown bits are noted.
named_bits=20
"$UBDKIT" features > /tmp/features 2>&1 ||
  fail "ubdkit features: exit $?: $(cat /tmp/features)"
echo "ubdkit features: $(cat /tmp/features)"
grep -q 'does not answer GET_FEATURES' /tmp/features &&
  fail "ubdkit features: the kernel ($VMTEST_KERNEL) does not answer GET_FEATURES"
[ "$(wc -l < /tmp/features)" = 1 ] || fail "ubdkit features: expected one line"
set -- $(cat /tmp/features)
mask=$1; shift
case "$mask" in 0x[0-9a-f]*) ;; *) fail "ubdkit features: '$mask' is not a hex mask" ;; esac
bits=0 top=-1 i=0
while [ $i -lt 64 ]; do
  [ $(( (mask >> i) & 1 )) = 1 ] && { bits=$((bits + 1)); top=$i; }
  i=$((i + 1))
done
[ $bits -gt 0 ] || fail "ubdkit features: empty mask $mask"
[ $# = $bits ] || fail "ubdkit features: $# names for the $bits bits of $mask"
for name; do
  case "$name" in
    bit[0-9]*)
      n=${name#bit}
      [ "$n" -gt $named_bits ] ||
        fail "ubdkit features: bit $n, a bit ubdkit knows, printed as $name"
      echo "note: the kernel has feature $name, newer than ubdkit knows" ;;
  esac
done
echo "ok - ubdkit features: $bits bits (highest $top), one name each, no bitN among bits 0-$named_bits"
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
