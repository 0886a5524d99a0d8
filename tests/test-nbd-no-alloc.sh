#!/usr/bin/env bash
# The NBD I/O path does not allocate: after "ready", connection set-up,
# every command fio, nbdsh, nbdinfo and nbdcopy can send, over several
# connections at once, must make no call to the malloc family, mmap,
# munmap, mremap, brk or pthread_create (counted by alloc-counter.so,
# LD_PRELOADed into the server), and must not grow the server's RSS.
# Then the same for the error paths: test-nbd-bad-input.py's malformed
# handshakes and requests.
#
# RSS threshold: zero growth, when the server's mlockall succeeded (the
# default, as root): every page it has mapped (heap, pools, thread stacks,
# code) is then resident from the start, and anything new can only come
# from an allocation we failed to interpose (glibc's internal __mmap,
# liburing's raw syscalls).  The page cache of the file backend is not the
# server's RSS: it reads and writes with preadv2/pwritev2 and io_uring, it
# maps nothing.  Without mlock (no CAP_IPC_LOCK) RssFile may grow as code
# pages are first touched and stack pages as calls nest deeper, neither an
# allocation; we then check RssAnon only, with 256 KiB for stack pages.
source "${srcdir:-.}/functions.sh"
requires_prog fio
requires_prog nbdcopy
requires_prog nbdinfo
requires_prog timeout
requires $NBDSH -c pass
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio lacks the nbd ioengine"
[ "${UBDKIT_SANITIZED:-no}" = no ] ||
  skip "sanitizer builds allocate in their runtime and reject LD_PRELOAD"
counter="${builddir:-.}/alloc-counter.so"
[ -f "$counter" ] || fail "$counter is not built (make check builds it)"
make_tmpdir
export tmp

M=$((1024 * 1024))
SIZE=$((64 * M))

# start_counted NAME [serve args...]: start a server with the counter and
# wait for its "ready" line.  Sets sock_NAME, pid_NAME.
start_counted () {
  local name=$1 sock="$tmp/$1.sock" pid i
  shift
  LD_PRELOAD="$counter" UBDKIT_ALLOC_LOG="$tmp/$name.alloc" \
    UBDKIT_ALLOC_TRACE=20 "$UBDKIT" serve --log=stderr -U "$sock" "$@" \
    2> "$tmp/$name.log" &
  pid=$!
  cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
  for (( i=0; i<400; i++ )); do
    grep -q 'ready:' "$tmp/$name.log" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || { cat "$tmp/$name.log"; fail "$name: server exited"; }
    sleep 0.05
  done
  grep -q 'ready:' "$tmp/$name.log" || fail "$name: no 'ready' line"
  printf -v "sock_$name" '%s' "$sock"
  printf -v "pid_$name" '%s' "$pid"
}

# snapshot NAME N: ask server NAME for its N-th counter line; print it.
snapshot () {
  local name=$1 n=$2 pid_var="pid_$1" i
  kill -USR1 "${!pid_var}"
  for (( i=0; i<200; i++ )); do
    grep -q "^seq=$n " "$tmp/$name.alloc" 2>/dev/null && break
    sleep 0.05
  done
  grep "^seq=$n " "$tmp/$name.alloc" || fail "$name: no counters for snapshot $n"
}

# rss NAME: "VmRSS RssAnon RssFile THREADS IO-WORKERS" of server NAME (kB).
# io_uring's io-wq workers (iou-wrk-*) are kernel threads the kernel starts
# on demand for requests that would block (file I/O): they are not ours,
# have no user memory and are counted apart.
rss () {
  local pid_var="pid_$1" comms
  comms=$(cat /proc/"${!pid_var}"/task/*/comm)
  awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s ", $2 }' \
    "/proc/${!pid_var}/status"
  echo "$(grep -vc '^iou-' <<< "$comms") $(grep -c '^iou-' <<< "$comms")"
}

# symbolize: add function and line to "binary(+0xOFFSET)" trace frames
# (static functions are not in the dynamic symbol table).
symbolize () {
  local line bin off
  while IFS= read -r line; do
    if [[ $line =~ ^(/[^\(]+)\(\+(0x[0-9a-f]+)\) ]] &&
       command -v addr2line >/dev/null; then
      bin=${BASH_REMATCH[1]} off=${BASH_REMATCH[2]}
      echo "$line  $(addr2line -f -i -p -e "$bin" "$off" 2>/dev/null | tr '\n' ' ')"
    else
      echo "$line"
    fi
  done
}

# check_zero NAME BEFORE AFTER: every counter must be unchanged.
check_zero () {
  local name=$1 before=$2 after=$3 bad=0 kv key
  declare -A b
  for kv in $before; do b[${kv%%=*}]=${kv#*=}; done
  for kv in $after; do
    key=${kv%%=*}
    [ "$key" = seq ] && continue
    if [ "${kv#*=}" != "${b[$key]}" ]; then
      echo "$name: $key: ${b[$key]} -> ${kv#*=} calls during I/O" >&2
      bad=1
    fi
  done
  if [ $bad = 1 ]; then
    echo "$name: first call sites (alloc-counter traces):" >&2
    grep -v '^seq=' "$tmp/$name.alloc" | symbolize >&2
    fail "$name: the I/O path allocated"
  fi
  echo "$name: no allocation during I/O"
}

# check_rss NAME BEFORE AFTER
check_rss () {
  local name=$1 rss0 anon0 file0 thr0 wq0 rss1 anon1 file1 thr1 wq1 slack=0
  read -r rss0 anon0 file0 thr0 wq0 <<< "$2"
  read -r rss1 anon1 file1 thr1 wq1 <<< "$3"
  echo "$name: VmRSS ${rss0} -> ${rss1} kB (anon ${anon0} -> ${anon1}," \
       "file ${file0} -> ${file1}), threads ${thr0} -> ${thr1}," \
       "io_uring workers ${wq0} -> ${wq1}"
  [ "$thr0" = "$thr1" ] || fail "$name: thread count changed"
  if grep -q 'mlock: all current and future memory locked' "$tmp/$name.log"; then
    [ "$rss1" -le "$rss0" ] || fail "$name: RSS grew by $((rss1 - rss0)) kB under mlockall"
  else
    echo "$name: not mlocked: checking RssAnon with 256 kB of slack"
    slack=256
    [ "$anon1" -le $((anon0 + slack)) ] ||
      fail "$name: RssAnon grew by $((anon1 - anon0)) kB"
  fi
}

cat > "$tmp/verify.fio" <<'FIO'
[global]
ioengine=nbd
uri=${uri}
iodepth=16
verify_state_save=0

# Four connections of random read/write with verification and a flush
# every 16 writes, each on its own 8 MiB.
[rw]
numjobs=4
rw=randrw
bsrange=4k-64k
size=8m
offset=0
offset_increment=8m
fsync=16
verify=crc32c
verify_fatal=1
do_verify=1

# Trim: write then trim each block, and random trims.
[trimwrite]
rw=trimwrite
bs=64k
size=8m
offset=32m

[randtrim]
rw=randtrim
bs=16k
size=8m
offset=40m

# Large requests, streamed through the slot buffers in pieces.
[big]
rw=randrw
bs=4m
size=16m
offset=48m
fsync=2
FIO
# The null backend reads zeros: no verification there.
sed -e 's/^verify=.*//' -e 's/^verify_fatal=.*//' -e 's/^do_verify=.*//' \
  "$tmp/verify.fio" > "$tmp/noverify.fio"

cat > "$tmp/commands.py" <<'PY'
import os
M = 1 << 20
uri = os.environ["uri"]
null = os.environ["name"] == "null"   # reads zeros whatever was written
def same(got, want):
    assert null or got == want, "data read back differs"

# Option negotiation in opt mode: LIST, INFO, LIST/SET_META_CONTEXT, ABORT.
h = nbd.NBD()
h.set_opt_mode(True)
h.connect_uri(uri)
h.opt_list(lambda name, desc: 0)
h.opt_info()
h.opt_list_meta_context(lambda name: 0)
h.opt_abort()

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
size = h.get_size()
# libnbd 1.14's strict flag check rejects DF on pread: let the server judge.
h.set_strict_mode(0)
data = os.urandom(M)
for i in range(8):
    h.pwrite(data, i * M, nbd.CMD_FLAG_FUA if i % 2 else 0)
    same(h.pread(M, i * M), data)
    same(h.pread(M, i * M, nbd.CMD_FLAG_DF), data)
h.flush()
h.trim(2 * M, 8 * M)
h.zero(M, 10 * M)
h.zero(M, 11 * M, nbd.CMD_FLAG_NO_HOLE)
h.zero(M, 12 * M, nbd.CMD_FLAG_FUA)
if h.can_fast_zero():
    try:
        h.zero(M, 13 * M, nbd.CMD_FLAG_FAST_ZERO)
    except nbd.Error:
        pass
h.cache(4 * M, 0)
for off in (0, 8 * M, 10 * M):
    h.block_status(8 * M, off, lambda ctx, o, e, err: 0)
    h.block_status(8 * M, off, lambda ctx, o, e, err: 0, nbd.CMD_FLAG_REQ_ONE)
# Errors the server answers.
for op in (lambda: h.pread(512, size), lambda: h.pwrite(b"x" * 512, size),
           lambda: h.pread(33 * M, 0), lambda: h.trim(0, size + M)):
    try:
        op()
    except nbd.Error:
        pass
# Many requests in flight on one connection.
bufs = [nbd.Buffer(64 * 1024) for _ in range(64)]
for i, b in enumerate(bufs):
    h.aio_pread(b, i * 64 * 1024)
while h.aio_in_flight() > 0:
    h.poll(-1)
h.shutdown()

# Simple replies: reads larger than a slot buffer are streamed.
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(uri)
big = os.urandom(8 * M)
h.pwrite(big, 16 * M)
same(h.pread(8 * M, 16 * M), big)
h.zero(M, 16 * M)
h.shutdown()

# NBD_OPT_EXPORT_NAME, which libnbd never sends to a server that has GO.
import struct, sys
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["srcdir"])
import nbdraw
with nbdraw.Conn(os.environ["sock"]) as c:
    c.handshake()
    c.send_option(nbdraw.OPT_EXPORT_NAME, b"")
    assert struct.unpack(">QH", c.recv_exact(10))[0] == size
    err, got = c.read(0, 4096)
    assert err == 0
    same(got, data[:4096])
    c.send_request(nbdraw.CMD_DISC)
print("ok")
PY

# io_phase NAME FIOJOB: the workload, against server NAME.
io_phase () {
  local name=$1 job=$2 sock_var="sock_$1" uri
  sock=${!sock_var}
  uri="nbd+unix:///?socket=$sock"
  export uri sock srcdir name
  timeout 300 fio --output="$tmp/$name.fio.out" "$tmp/$job" ||
    { cat "$tmp/$name.fio.out"; fail "$name: fio failed"; }
  [ "$(grep -c 'err= 0' "$tmp/$name.fio.out")" -eq 7 ] ||
    { cat "$tmp/$name.fio.out"; fail "$name: fio: expected 7 jobs with err= 0"; }
  out=$(timeout 300 $NBDSH -c "exec(open('$tmp/commands.py').read())") ||
    fail "$name: nbdsh commands failed"
  [ "$out" = ok ] || fail "$name: nbdsh: $out"
  nbdinfo "$uri" > /dev/null || fail "$name: nbdinfo failed"
  nbdinfo --list "$uri" > /dev/null || fail "$name: nbdinfo --list failed"
  nbdinfo --map "$uri" > /dev/null || fail "$name: nbdinfo --map failed"
  # A sparse image: nbdcopy writes the data and zeroes the rest, over
  # several connections, then reads it all back.
  timeout 300 nbdcopy --connections=4 "$tmp/src.img" "$uri" ||
    fail "$name: nbdcopy in failed"
  timeout 300 nbdcopy --connections=4 --request-size=$((32 * M)) \
    "$uri" "$tmp/out.img" || fail "$name: nbdcopy out failed"
  if [ "$name" != null ]; then
    cmp "$tmp/src.img" "$tmp/out.img" || fail "$name: nbdcopy data differs"
  fi
}

# run_case NAME FIOJOB BACKEND...
run_case () {
  local name=$1 job=$2 s0 s1 r0 r1
  shift 2
  start_counted "$name" "$@"
  s0=$(snapshot "$name" 1)
  r0=$(rss "$name")
  io_phase "$name" "$job"
  s1=$(snapshot "$name" 2)
  r1=$(rss "$name")
  check_zero "$name" "$s0" "$s1"
  check_rss "$name" "$r0" "$r1"
}

head -c $((16 * M)) /dev/urandom > "$tmp/src.img"
truncate -s $SIZE "$tmp/src.img"
truncate -s $SIZE "$tmp/disk.img"

run_case memory verify.fio memory size=64M
run_case file verify.fio file file="$tmp/disk.img"
run_case null noverify.fio null size=64M
# O_DIRECT file I/O; and one loop with two slots, where most requests
# wait for a slot (backpressure) and large ones stream through one buffer.
truncate -s $SIZE "$tmp/disk2.img"
run_case file_direct verify.fio file file="$tmp/disk2.img" direct=true
run_case memory_depth2 verify.fio -t 1 --depth 2 memory size=64M

# Error paths: malformed handshakes and requests, disconnects mid-request,
# writes to a read-only export.
start_counted bad_rw memory size=64M
start_counted bad_ro -r memory size=64M
s0_rw=$(snapshot bad_rw 1)
s0_ro=$(snapshot bad_ro 1)
timeout 300 "$PYTHON" "$srcdir/test-nbd-bad-input.py" \
  "$sock_bad_rw" "$pid_bad_rw" "$sock_bad_ro" "$pid_bad_ro" > "$tmp/bad.out" ||
  { cat "$tmp/bad.out"; fail "test-nbd-bad-input.py failed"; }
check_zero bad_rw "$s0_rw" "$(snapshot bad_rw 2)"
check_zero bad_ro "$s0_ro" "$(snapshot bad_ro 2)"
