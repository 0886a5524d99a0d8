#!/bin/bash
# Forward progress under memory pressure, in VMs (one boot per scenario):
#   ublk-file    swap on `ubdkit add file file=/dev/vda`, hog 1.5 x RAM
#   ublk-memory  swap on `ubdkit add memory size=160M`, hog 1.5 x what is left
#   nbd          swap on /dev/nbd0 <- nbd-client -swap <- `ubdkit serve`
#   writeback    256 MiB through ext4 on ublk from a cgroup with memory.max=32M
#   oom          hog > RAM + swap: the OOM killer takes it, not the server
#   ublk-file-buffered  ublk-file without direct=true (not run by default:
#                it livelocks, see docs/forward-progress.md)
# The file backend runs with direct=true unless FILE_OPTS says otherwise.
# The hogs' time limits assume the guest has the machine's CPUs: each boot
# is a vm-run --exclusive (no other VM test's guest meanwhile).
# Inner scripts: tests/vm/swap-*.sh; the hog is tests/memhog.c.
#
# Environment: VM_SWAP_SCENARIOS (default: ublk-file ublk-memory writeback;
# oom is test-vm-oom.sh; nbd hangs, see docs/forward-progress.md, and runs
# only when asked: `make check-unprotected` runs it, protected and not), VM_SWAP_TIMEOUT (per boot, default 300 s),
# HOG_TIMEOUT (per hog, default 240 s), UBDKIT_PROT (server options, e.g.
# "--io-flusher=off --no-mlock --oom-score-adj off"), VM_SWAP_REPORT=1:
# run every scenario, print one RESULT line each and exit 0 whatever
# happened (`make check-unprotected`).  VM_SWAP_MEM overrides the memory.
source "${srcdir:-.}/functions.sh"
skip_if_sanitized
vm="$srcdir/vm"
memhog="${builddir:-.}/memhog"
[ -x "$memhog" ] || fail "$memhog not built (make check builds it)"
scenarios=${VM_SWAP_SCENARIOS:-"ublk-file ublk-memory writeback"}
timeout=${VM_SWAP_TIMEOUT:-300}
report=${VM_SWAP_REPORT:-0}

# Disk images on the host (sparse); not under /tmp when the build tree will do.
disks=$(mktemp -d "${builddir:-.}/vm-disks.XXXXXX" 2>/dev/null ||
        mktemp -d "${TMPDIR:-/tmp}/ubdkit-vm-disks.XXXXXX")
cleanup_fn "rm -rf '$disks'"
make_tmpdir

first_bad=0
results=()
bad=()
for s in $scenarios; do
  rm -f "$disks"/*.img
  truncate -s 1G "$disks/a.img" "$disks/b.img"
  case $s in
    ublk-file|ublk-file-buffered) args=(--mem ${VM_SWAP_MEM:-320} --disk "$disks/a.img") ;;
    ublk-memory) args=(--mem ${VM_SWAP_MEM:-384}) ;;
    nbd)         args=(--mem ${VM_SWAP_MEM:-320} --disk "$disks/a.img" --disk "$disks/b.img") ;;
    writeback)   args=(--mem ${VM_SWAP_MEM:-320} --disk "$disks/a.img" --disk "$disks/b.img") ;;
    oom)         truncate -s 256M "$disks/a.img"
                 args=(--mem ${VM_SWAP_MEM:-320} --disk "$disks/a.img") ;;
    *) fail "unknown scenario $s" ;;
  esac
  envs=(--env VMLIB=/vmlib.sh)
  for e in UBDKIT_PROT HOG_TIMEOUT HOG_MB SWAP_MEM_MB WB_MB WB_LIMIT; do
    [ -n "${!e:-}" ] && envs+=(--env "$e=${!e}")
  done
  script=$s
  # The file backend through the page cache (known to livelock as swap).
  [ $s = ublk-file-buffered ] && { script=ublk-file; envs+=(--env FILE_OPTS=); }
  [ -n "${FILE_OPTS+set}" ] && envs+=(--env "FILE_OPTS=$FILE_OPTS")
  echo "=== $s${UBDKIT_PROT:+ (server: $UBDKIT_PROT)}"
  st=0
  "$vm/vm-run" --exclusive "${args[@]}" --timeout "$timeout" --carry "$vm/lib.sh=/vmlib.sh" \
    --carry "$memhog=/ubdkit/memhog" "${envs[@]}" "$vm/swap-$script.sh" \
    > "$tmp/$s.raw" 2>&1 || st=$?
  tr -d '\r' < "$tmp/$s.raw" > "$tmp/$s.log"
  # The scripts' own lines (not the kernel's, not the framing) and the verdict.
  grep -vE '^\[ *[0-9]+\.[0-9]+\]|^<[0-9]>\[|^=== VMTEST (DMESG|BEGIN|DONE)|^ubdkit\[' "$tmp/$s.log" |
    grep -E '^(ok|FAIL|TIME|  |vm-run)' | grep -v '^  |' || true
  time=$(grep -oE '^TIME .* [0-9.]+ s$' "$tmp/$s.log" | tail -1 | awk '{print $(NF-1)}') || true
  if [ $st = 0 ]; then outcome=pass
  elif grep -qE 'Killed process [0-9]+ \(ubdkit\)' "$tmp/$s.log"; then outcome="server OOM-killed"
  elif grep -qE 'VMTEST TIMEOUT|vm-run: FAIL: timeout after' "$tmp/$s.log"; then outcome="hang (VM timeout ${timeout} s)"
  elif grep -qE 'blocked for more than' "$tmp/$s.log"; then outcome="hung tasks reported"
  else outcome="fail (status $st)"; fi
  results+=("RESULT $s ${UBDKIT_PROT:+unprotected }${UBDKIT_PROT:-protected}: $outcome${time:+, hog/write phase $time s}")
  if [ $st != 0 ]; then
    bad+=("$s")
    [ -n "${VM_SWAP_KEEP_LOGS:-}" ] && cp "$tmp/$s.log" "$VM_SWAP_KEEP_LOGS/$s.log"
    [ $first_bad = 0 ] && first_bad=$st
  fi
done
# The failed scenarios' consoles last, so that the end of this test's log
# (all a CI summary shows) holds them: the guest's blocked tasks (SysRq w,
# sent by vm-run's watchdog before the timeout) and the console's tail.
for s in "${bad[@]}"; do
  echo "--- $s: blocked tasks (SysRq w) and the server's threads"
  awk '/VMTEST TIMEOUT/ { on = 1 } on && /task:| [a-z_.]+\+0x[0-9a-f]+\/0x/' "$tmp/$s.log" |
    head -n 120 | sed 's/^/  | /'
  echo "--- $s: console tail"
  tail -n 60 "$tmp/$s.log" | sed 's/^/  | /'
done
printf '%s\n' "${results[@]}"
[ "$report" = 1 ] && exit 0
exit $first_bad
