# Helpers for scripts that run inside the test VM (busybox sh).
# Sourced as: . "$VMLIB"
set -e

fail () { echo "FAIL: $*"; exit 1; }
ok () { echo "ok - $*"; }

# add_dev VAR ARGS...: `ubdkit add ARGS`, the device path into VAR.
add_dev () {
  _var=$1; shift
  _dev=$("$UBDKIT" add "$@") || fail "ubdkit add $*"
  [ -b "$_dev" ] || fail "ubdkit add $*: $_dev is not a block device"
  eval "$_var=$_dev"
}

dev_id () { echo "${1#/dev/ublkb}"; }

# refused WHY ARGS...: `ubdkit add ARGS` must fail, saying WHY (a grep
# pattern), and leave no device behind (call it with no other device).
refused () {
  _why=$1; shift
  if "$UBDKIT" add "$@" >/tmp/refused.out 2>/tmp/refused.err; then
    fail "ubdkit add $* was accepted"
  fi
  grep -q "$_why" /tmp/refused.err ||
    { cat /tmp/refused.err; fail "ubdkit add $*: refused without saying '$_why'"; }
  [ -z "$(ls /sys/class/ublk-char 2>/dev/null)" ] || fail "the refused ubdkit add $* left a device"
}

# dev_flags DEV: DEV's ublk flags by name, "A|B|...", from `ubdkit list`.
dev_flags () {
  "$UBDKIT" list | awk -v id="$(dev_id "$1")" '
    $1 == id { found = 1; next } found && /flags:/ { sub(/.*flags: /, ""); print; exit }'
}

# server_pid DEV: the pid serving DEV, from `ubdkit list --json`.
server_pid () {
  "$UBDKIT" list --json | tr ',' '\n' | awk -v d="\"$1\"" '
    /"device":/ { cur = $2 } /"pid":/ { if (cur == d) print $2 }'
}

# fs_roundtrip DEV: ext4 on DEV, files written, fsck clean, checksums kept
# across a remount.
fs_roundtrip () {
  mkfs.ext4 -q -F "$1" || fail "mkfs.ext4 $1"
  mkdir -p /mnt/t
  mount "$1" /mnt/t || fail "mount $1"
  for i in 1 2 3 4; do
    dd if=/dev/urandom of=/mnt/t/f$i bs=64k count=$((i * 16)) 2>/dev/null
  done
  (cd /mnt/t && md5sum f1 f2 f3 f4) > /tmp/sums
  umount /mnt/t
  e2fsck -f -n "$1" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck $1"; }
  mount "$1" /mnt/t || fail "remount $1"
  (cd /mnt/t && md5sum -c /tmp/sums) >/dev/null || fail "checksums after remount of $1"
  umount /mnt/t
}

# del_dev DEV: delete and check that it and its server are gone.
del_dev () {
  _pid=$(server_pid "$1")
  "$UBDKIT" del "$(dev_id "$1")" || fail "ubdkit del $1"
  [ ! -b "$1" ] || fail "$1 still exists after del"
  if [ -n "$_pid" ]; then
    for _i in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$_pid" 2>/dev/null || return 0
      sleep 0.2
    done
    fail "server $_pid of $1 still running after del"
  fi
}

# ---------------------------------------------------------------- forward progress
# Protection options for the servers under test: empty (the defaults) or,
# for `make check-unprotected`, "--io-flusher=off --no-mlock --oom-score-adj off".
PROT=${UBDKIT_PROT:-}
[ -n "$PROT" ] && MODE=unprotected || MODE=protected

# meminfo_mb FIELD: a /proc/meminfo field in MiB.
meminfo_mb () { awk -v f="$1:" '$1 == f { print int($2 / 1024) }' /proc/meminfo; }
# status_kb PID FIELD: a /proc/PID/status field in kB (0 if absent).
status_kb () { awk -v f="$2:" '$1 == f { v = $2 } END { print v + 0 }' /proc/$1/status; }
uptime_s () { awk '{ print $1 }' /proc/uptime; }
since () { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

# thread_stats PID: one line per thread of PID: "TID FLAGS COMM", FLAGS being
# field 9 of /proc/PID/task/TID/stat in decimal.  COMM may hold spaces and
# parentheses, so the fields are counted after the last ')'.
thread_stats () {
  for _st in /proc/$1/task/*/stat; do
    _line=$(cat "$_st" 2>/dev/null) || continue
    _tid=${_line%% *}
    _comm=${_line#*\(}; _comm=${_comm%\)*}
    _rest=${_line##*\)}
    # state ppid pgrp session tty_nr tpgid flags: flags is the 7th.
    _flags=$(echo "$_rest" | awk '{ print $7 }')
    echo "$_tid $_flags $_comm"
  done
}

PF_MEMALLOC_NOIO=524288     # 0x00080000
PF_LOCAL_THROTTLE=1048576   # 0x00100000

# check_flusher PID set|clear WHAT: every thread of PID has (set) or lacks
# (clear) both PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE; fails naming each
# thread that does not and the flag.  Appends the thread names seen to
# /tmp/threads.seen.
check_flusher () {
  _bad=0
  _n=0
  thread_stats "$1" > /tmp/threads.now
  [ -s /tmp/threads.now ] || fail "$3: no threads for pid $1 (server gone?)"
  while read -r _tid _flags _comm; do
    _n=$((_n + 1))
    echo "$_comm" >> /tmp/threads.seen
    _noio=$((_flags & PF_MEMALLOC_NOIO))
    _thr=$((_flags & PF_LOCAL_THROTTLE))
    _hex=$(printf '0x%08x' "$_flags")
    if [ "$2" = set ]; then
      [ $_noio != 0 ] || { echo "  thread $_tid ($_comm) flags $_hex lacks PF_MEMALLOC_NOIO"; _bad=1; }
      [ $_thr != 0 ] || { echo "  thread $_tid ($_comm) flags $_hex lacks PF_LOCAL_THROTTLE"; _bad=1; }
    else
      [ $_noio = 0 ] || { echo "  thread $_tid ($_comm) flags $_hex has PF_MEMALLOC_NOIO"; _bad=1; }
      [ $_thr = 0 ] || { echo "  thread $_tid ($_comm) flags $_hex has PF_LOCAL_THROTTLE"; _bad=1; }
    fi
  done < /tmp/threads.now
  [ $_bad = 0 ] || { cat /tmp/threads.now; fail "$3: not every thread of $1 has the flags $2"; }
  return 0
}

# run_hog MIB LABEL [SECS]: run memhog MIB under a time limit (default 240 s)
# and print one "TIME" line with the outcome; returns memhog's status.
run_hog () {
  _t0=$(uptime_s)
  # Progress lines go to the console as they come, so a hang shows where.
  { timeout -s KILL "${3:-240}" memhog $1 2>&1; echo $? > /tmp/hog.st; } |
    tee /tmp/hog.out | sed 's/^/  /'
  _st=$(cat /tmp/hog.st)
  _dt=$(since "$_t0")
  echo "TIME $2 $MODE mem=${VMTEST_MEM_MB}MiB hog=${1%% *}MiB status=$_st ${_dt} s"
  return $_st
}

# swap_report: one line with swap and memory use, for the log.
swap_report () {
  echo "  $(grep -E '^(MemFree|SwapTotal|SwapFree):' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
}

# check_locked PID WHAT: VmLck >= VmRSS once the kernel's own special
# mappings are set aside.  mlockall cannot lock (and does not count in
# VmLck) VM_DONTEXPAND/VM_IO/VM_PFNMAP/VM_MIXEDMAP mappings -- the io_uring
# rings and the vdso -- whose pages are kernel pages, never swapped, yet
# counted in VmRSS.  Every other mapping must be resident only where locked.
# Sets LOCK_INFO to a summary.
check_locked () {
  if [ "${UBDKIT_SANITIZED:-no}" != no ]; then
    LOCK_INFO="not checked: sanitizer build (ASan makes mlockall a no-op)"
    return 0
  fi
  _lck=$(status_kb "$1" VmLck); _rss=$(status_kb "$1" VmRSS)
  # smaps' Locked: is proportional (pages shared with the supervisor count
  # half), so judge each resident mapping by its "lo" (VM_LOCKED) flag.
  _spec=$(awk '/^[0-9a-f]+-[0-9a-f]+ / { m = $0 } /^Rss:/ { r = $2 }
    /^VmFlags:/ { if ($0 ~ / (de|io|pf|mm)( |$)/) s += r; else if (r > 0 && $0 !~ / lo( |$)/) { print "  unlocked: " r " kB resident: " m > "/dev/stderr"; bad = 1 } }
    END { print s + 0; exit bad }' /proc/$1/smaps) || fail "$2: resident memory outside locked mappings"
  LOCK_INFO="VmLck $_lck kB >= VmRSS $_rss kB - $_spec kB in io_uring rings/vdso"
  [ $((_lck + _spec)) -ge "$_rss" ] || fail "$2: $LOCK_INFO does not hold"
}

# no_other_swap: fail unless no swap is active.
no_other_swap () {
  [ "$(wc -l < /proc/swaps)" -le 1 ] || { cat /proc/swaps; fail "swap already active"; }
}

# hog_mb: memhog size for this VM: HOG_MB if set, else 1.5 x MemTotal.
hog_mb () { echo "${HOG_MB:-$(( $(meminfo_mb MemTotal) * 3 / 2 ))}"; }

# alive PID WHAT: fail unless PID still runs.
alive () { kill -0 "$1" 2>/dev/null || fail "$2: server $1 is gone"; }

# roundtrip DEV WHAT: 4 MiB of random data written and read back, direct.
roundtrip () {
  dd if=/dev/urandom of=/tmp/rt.src bs=1M count=4 2>/dev/null
  dd if=/tmp/rt.src of="$1" bs=1M count=4 oflag=direct 2>/dev/null || fail "$2: write to $1"
  dd if="$1" of=/tmp/rt.back bs=1M count=4 iflag=direct 2>/dev/null || fail "$2: read from $1"
  cmp -s /tmp/rt.src /tmp/rt.back || fail "$2: data read back from $1 differs"
  rm -f /tmp/rt.src /tmp/rt.back
}

# Options for the file backend serving swap: O_DIRECT by default.  With the
# page cache (FILE_OPTS=""), every page swapped out needs a new page-cache
# page of the backing disk, allocated by the server in NOIO reclaim, which
# can neither swap nor fall back on the OOM killer: the machine livelocks
# (see docs/forward-progress.md, "Measurements").
FILE_OPTS=${FILE_OPTS-direct=true}
