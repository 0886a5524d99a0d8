#!/usr/bin/env bash
# filter-alloc.sh: heap allocations per request of each nbdkit filter
# served by ubdkit (--filter), measured with tests/alloc-counter.so.
#
# ubdkit's native backends never allocate on the I/O path
# (tests/test-nbd-no-alloc.sh); nbdkit filters are third-party code and
# some allocate per request by design.  For every case below (a filter,
# or a chain, over ubdkit's file backend), this starts
#
#   LD_PRELOAD=alloc-counter.so ubdkit serve -U SOCK --filter=F... file file=IMG ARGS
#
# connects one client (libnbd, Python), warms every operation up (the
# connection's contexts, the filter's per-connection state and the
# worker threads are made then), and for each operation takes a counter
# snapshot (SIGUSR1), sends ALLOC_N requests of it, and takes another.
# Reported per case and operation: allocation calls per request, i.e.
# the growth of malloc, calloc, realloc, reallocarray, posix_memalign,
# aligned_alloc, memalign, valloc, pvalloc, mmap (anonymous and of files),
# mremap, brk, sbrk and pthread_create, divided by ALLOC_N.  free and
# munmap are not added in (they pair with the allocations).
#
# Operations (each one only where the chain offers it):
#   read     4 KiB pread at a random 4 KiB-aligned offset (QD1)
#   read16   the same, 16 in flight (aio): the worker threads in parallel
#   write    4 KiB pwrite
#   fua      4 KiB pwrite with FUA
#   flush    flush
#   trim     4 KiB trim
#   zero     4 KiB write-zeroes
#   extents  block status of 64 KiB (base:allocation)
#   cache    4 KiB NBD_CMD_CACHE
# Offsets lie between 1 MiB and 33 MiB (so protect can guard the first
# MiB).  The image is 64 MiB of random data unless the case says.
#
# Usage: bench/filter-alloc.sh [CASE...]     (default: every case)
#        bench/filter-alloc.sh --list
# Environment:
#   UBDKIT=PATH          the ubdkit binary (default <repo>/ubdkit)
#   ALLOC_COUNTER=PATH   alloc-counter.so (default <repo>/tests/alloc-counter.so;
#                        `make tests/alloc-counter.so` builds it)
#   ALLOC_N=N            requests per operation (default 1000)
#   ALLOC_TRACE=N        record the call stacks of the first N counted
#                        calls (frees too) after the first snapshot
#                        (default 0), printed for the cases that allocated
#   ALLOC_RESULTS=FILE   also write the report here
#   ALLOC_CHECK_ZERO=1   exit 1 if any case allocated on any operation
#                        (tests/test-nbdkit-filter-noalloc.sh)
#   ALLOC_TMPDIR=DIR     scratch directory parent (default ${TMPDIR:-/tmp})
#   ALLOC_KEEP=1         keep the scratch directory
#
# Exit status: 0; 1 if a case failed to run (or, with ALLOC_CHECK_ZERO=1,
# allocated); 2 on a usage error.  A case whose filter is not installed
# is reported as "not installed" and is no failure.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
: "${UBDKIT:=$top/ubdkit}"
: "${ALLOC_COUNTER:=$top/tests/alloc-counter.so}"
: "${ALLOC_N:=1000}"
: "${ALLOC_TRACE:=0}"
: "${ALLOC_CHECK_ZERO:=0}"
: "${ALLOC_TMPDIR:=${TMPDIR:-/tmp}}"
: "${ALLOC_KEEP:=0}"
PYTHON=/usr/bin/python3          # Debian's, with libnbd's bindings

log () { printf '[filter-alloc %s] %s\n' "$(date +%T)" "$*" >&2; }
die () { log "ERROR: $*"; exit 2; }

# The cases: NAME, then the filters (comma-separated, outermost first),
# then the image kind, then the arguments after "file file=IMG".
# Image kinds: raw (64 MiB random), zero (64 MiB of zeros), mbr (an MBR
# disk whose first partition covers 1-63 MiB), luks, xz, gzip, tar, ext2.
CASES='
none		-			raw
nofilter	nofilter		raw
offset		offset			raw	offset=1M range=48M
truncate	truncate		raw	truncate=40M
truncate-round	truncate		raw	round-up=1M
partition	partition		mbr	partition=1
cow		cow			raw
cache		cache			raw
luks		luks			luks	passphrase=secret
readahead	readahead		raw
blocksize	blocksize		raw	minblock=4K maxdata=64K
blocksize-policy blocksize-policy	raw	blocksize-minimum=512 blocksize-preferred=4K blocksize-maximum=1M
nozero		nozero			raw
noextents	noextents		raw
fua		fua			raw	fuamode=emulate
fua-force	fua			raw	fuamode=force
multi-conn	multi-conn		raw
protect		protect			raw	protect=0-1048575
rate		rate			raw	rate=10G
delay		delay			raw	rdelay=0 wdelay=0
error		error			raw	error-rate=0
log		log			raw	logfile=@TMP@/log.txt
stats		stats			raw	statsfile=@TMP@/stats.txt
retry		retry			raw
retry-request	retry-request		raw
swab		swab			raw	swab-bits=32
checkwrite	checkwrite		zero
limit		limit			raw
noparallel	noparallel		raw
nocache		nocache			raw	cachemode=emulate
cacheextents	cacheextents		raw
exportname	exportname		raw
extentlist	extentlist		raw	extentlist=@TMP@/extents.txt
ddrescue	ddrescue		raw	ddrescue-mapfile=@TMP@/ddrescue.map
xz		xz			xz
gzip		gzip			gzip
tar		tar			tar	tar-entry=disk.img
ext2		ext2			ext2	ext2file=/disk.img
offset+truncate	offset,truncate		raw	offset=1M truncate=40M
cow+offset+truncate cow,offset,truncate raw	offset=1M truncate=40M
'

case_names () { awk 'NF { print $1 }' <<<"$CASES"; }
case_line () { awk -v n="$1" '$1 == n' <<<"$CASES"; }

if [ "${1:-}" = --list ]; then case_names; exit 0; fi
want=("$@")
[ ${#want[@]} -gt 0 ] || mapfile -t want < <(case_names)
for c in "${want[@]}"; do
  [ -n "$(case_line "$c")" ] || die "unknown case '$c' (--list lists them)"
done

[ -x "$UBDKIT" ] || die "$UBDKIT is not built"
[ -f "$ALLOC_COUNTER" ] || die "$ALLOC_COUNTER is missing (make tests/alloc-counter.so)"
"$PYTHON" -c 'import nbd' 2>/dev/null || die "$PYTHON lacks libnbd's nbd module (python3-libnbd)"
[[ $ALLOC_N =~ ^[0-9]+$ && $ALLOC_N -gt 0 ]] || die "ALLOC_N must be a positive integer"
filterdir=$(pkg-config --variable=filterdir nbdkit 2>/dev/null) ||
  die "pkg-config cannot find nbdkit's filterdir"

scratch=$(mktemp -d "$ALLOC_TMPDIR/filter-alloc.XXXXXX")
server_pid=
cleanup () {
  local st=$?
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$ALLOC_KEEP" = 1 ]; then log "scratch kept in $scratch"
  else rm -rf "$scratch"; fi
  exit $st
}
trap cleanup EXIT
trap 'exit 130' INT TERM

M=$((1024 * 1024))

# image KIND: make (once) and print the image of that kind.
image () {
  local kind=$1 f=$scratch/img.$1
  if [ -e "$f" ]; then echo "$f"; return 0; fi
  case $kind in
    raw) head -c $((64 * M)) /dev/urandom > "$f" ;;
    zero) truncate -s $((64 * M)) "$f" ;;
    mbr)
      head -c $((62 * M)) /dev/urandom > "$scratch/part1" &&
        nbdkit -U - partitioning "$scratch/part1" partition-type=mbr \
          --run "nbdcopy \"\$uri\" '$f'" >&2 ;;
    luks)
      # qemu-img times its key derivation first, which fails now and
      # then on a busy machine ("Unable to get accurate CPU usage").
      for _ in 1 2 3 4 5; do
        qemu-img create -q -f luks --object secret,id=sec0,data=secret \
          -o key-secret=sec0 "$f" 64M >&2 && break
        rm -f "$f"
      done
      [ -f "$f" ] ;;
    xz)
      # Blocks of 1 MiB: the xz filter reads one block per request.
      head -c $((40 * M)) /dev/urandom > "$scratch/xz.raw" &&
        xz -0 -T1 --block-size=1MiB -c "$scratch/xz.raw" > "$f" ;;
    gzip) head -c $((40 * M)) /dev/urandom | gzip -1 > "$f" ;;
    tar)
      mkdir -p "$scratch/tardir" &&
        head -c $((40 * M)) /dev/urandom > "$scratch/tardir/disk.img" &&
        tar -C "$scratch/tardir" -cf "$f" disk.img ;;
    ext2)
      mkdir -p "$scratch/ext2dir" &&
        head -c $((40 * M)) /dev/urandom > "$scratch/ext2dir/disk.img" &&
        mke2fs -q -F -t ext2 -d "$scratch/ext2dir" "$f" 64M >&2 ;;
  esac || { rm -f "$f"; return 1; }
  echo "$f"
}

# Files some filters read at start.
printf '0 64M\n' > "$scratch/extents.txt"
cat > "$scratch/ddrescue.map" <<'EOF'
# Mapfile. Created by GNU ddrescue version 1.27
# current_pos  current_status  current_pass
0x00000000     +               1
#      pos        size  status
0x00000000  0x04000000  +
EOF

# The client: warm-up, then per operation snapshot, ALLOC_N requests,
# snapshot.  Prints "OP name=delta ..." per operation.
cat > "$scratch/driver.py" <<'PY'
import os, random, signal, sys, time
import nbd

sock, pid, alloc_log, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
seq = 0

def snapshot():
    global seq
    seq += 1
    os.kill(pid, signal.SIGUSR1)
    want = "seq=%d " % seq
    for _ in range(400):
        with open(alloc_log) as f:
            for line in f:
                if line.startswith(want):
                    return dict(kv.split("=") for kv in line.split()[1:])
        time.sleep(0.01)
    sys.exit("no counters from the server for snapshot %d" % seq)

h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_unix(sock)
size = h.get_size()
lo, hi = 1 << 20, min(size, 33 << 20) - 65536
if hi <= lo:
    sys.exit("export too small: %d bytes" % size)
rnd = random.Random(1)
def off():
    return rnd.randrange(lo // 4096, hi // 4096) * 4096
zeros = os.environ.get("ALLOC_ZERO_WRITES") == "1"
buf = bytes(4096) if zeros else bytes(range(256)) * 16
bufs = [nbd.Buffer(4096) for _ in range(16)]

def read16(count):
    done = 0
    while done < count:
        k = min(16, count - done)
        for i in range(k):
            h.aio_pread(bufs[i], off())
        while h.aio_in_flight() > 0:
            h.poll(-1)
        done += k

ops = [("read", lambda: h.pread(4096, off())), ("read16", None)]
if not h.is_read_only():
    ops.append(("write", lambda: h.pwrite(buf, off())))
    if h.can_fua():
        ops.append(("fua", lambda: h.pwrite(buf, off(), nbd.CMD_FLAG_FUA)))
if h.can_flush():
    ops.append(("flush", lambda: h.flush()))
if not h.is_read_only() and h.can_trim():
    ops.append(("trim", lambda: h.trim(4096, off())))
if not h.is_read_only() and h.can_zero():
    ops.append(("zero", lambda: h.zero(4096, off())))
if h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
    ops.append(("extents",
                lambda: h.block_status(65536, off(), lambda *a: 0)))
if h.can_cache():
    ops.append(("cache", lambda: h.cache(4096, off())))

def run(name, fn, count):
    if fn is None:
        read16(count)
    else:
        for _ in range(count):
            fn()

for name, fn in ops:            # warm-up
    run(name, fn, 64)
prev = snapshot()
for name, fn in ops:
    run(name, fn, n)
    cur = snapshot()
    print(name, " ".join("%s=%d" % (k, int(cur[k]) - int(prev[k])) for k in cur))
    prev = cur
h.shutdown()
PY

ALLOC_KEYS='malloc calloc realloc reallocarray posix_memalign aligned_alloc memalign valloc pvalloc mmap_anon mmap_file mremap brk sbrk pthread_create'
OPS='read read16 write fua flush trim zero extents cache'

# run_case NAME: one row into $scratch/rows (NAME TAB filters TAB op=allocs ...),
# trace lines into $scratch/NAME.trace.
failed=0
run_case () {
  local name=$1 line filters kind img sock alog slog i fl
  local -a fargs=() bargs=()
  line=$(case_line "$name")
  read -r _ filters kind rest <<<"$line"
  if [ "$filters" != - ]; then
    IFS=, read -r -a fl <<<"$filters"
    for i in "${fl[@]}"; do
      if [ ! -f "$filterdir/nbdkit-$i-filter.so" ]; then
        printf '%s\t%s\tnot installed\n' "$name" "$filters" >> "$scratch/rows"
        return 0
      fi
      fargs+=("--filter=$i")
    done
  fi
  img=$(image "$kind") || { printf '%s\t%s\tFAILED: cannot make the %s image\n' \
                              "$name" "$filters" "$kind" >> "$scratch/rows"; failed=1; return 0; }
  # shellcheck disable=SC2206
  bargs=(${rest//@TMP@/$scratch})
  sock=$scratch/$name.sock alog=$scratch/$name.alloc slog=$scratch/$name.log
  rm -f "$sock" "$alog"
  log "$name: ubdkit serve ${fargs[*]} file file=IMG ${bargs[*]}"
  LD_PRELOAD="$ALLOC_COUNTER" UBDKIT_ALLOC_LOG="$alog" \
    UBDKIT_ALLOC_TRACE="$ALLOC_TRACE" \
    "$UBDKIT" serve --log=stderr -U "$sock" "${fargs[@]}" file "file=$img" "${bargs[@]}" \
    2> "$slog" &
  server_pid=$!
  for (( i = 0; i < 400; i++ )); do
    grep -q 'ready:' "$slog" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q 'ready:' "$slog"; then
    printf '%s\t%s\tFAILED: no ready line: %s\n' "$name" "$filters" \
      "$(grep -v 'warning:' "$slog" | tail -n 2 | tr '\n' ' ')" >> "$scratch/rows"
    failed=1
  elif ! ALLOC_ZERO_WRITES=$([ "$kind" = zero ] && echo 1 || echo 0) \
       timeout 600 "$PYTHON" "$scratch/driver.py" "$sock" "$server_pid" "$alog" \
         "$ALLOC_N" > "$scratch/$name.out" 2> "$scratch/$name.err"; then
    printf '%s\t%s\tFAILED: client: %s\n' "$name" "$filters" \
      "$(tail -n 1 "$scratch/$name.err")" >> "$scratch/rows"
    failed=1
  else
    awk -v name="$name" -v filters="$filters" -v n="$ALLOC_N" -v keys="$ALLOC_KEYS" '
      BEGIN { split(keys, k, " "); for (i in k) alloc[k[i]] = 1 }
      { a = 0; what = ""
        for (i = 2; i <= NF; i++) {
          split($i, kv, "=")
          if (kv[1] in alloc && kv[2] > 0) { a += kv[2]; what = what (what ? "+" : "") kv[1] }
        }
        cell[$1] = a; kinds[$1] = what; ops = ops " " $1 }
      END { printf "%s\t%s\t", name, filters
        m = split(ops, o, " ")
        for (i = 1; i <= m; i++) printf "%s=%s:%s ", o[i], cell[o[i]], kinds[o[i]]
        printf "\n" }' "$scratch/$name.out" >> "$scratch/rows"
    grep -v '^seq=' "$alog" > "$scratch/$name.trace" || true
  fi
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

: > "$scratch/rows"
for c in "${want[@]}"; do run_case "$c"; done

# symbolize: function and line for "binary(+0xOFF)" frames (static
# functions are not in the dynamic symbol table).
symbolize () {
  local line bin off
  while IFS= read -r line; do
    if [[ $line =~ ^(/[^\(]+)\(\+(0x[0-9a-f]+)\) ]] && command -v addr2line >/dev/null; then
      bin=${BASH_REMATCH[1]} off=${BASH_REMATCH[2]}
      echo "    $line  $(addr2line -f -i -p -e "$bin" "$off" 2>/dev/null | tr '\n' ' ')"
    else
      echo "    $line"
    fi
  done
}

report () {
  local o
  echo "# nbdkit filters under ubdkit: allocations per request"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); ubdkit $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?'); nbdkit $(dpkg-query -W -f='${Version}' nbdkit 2>/dev/null || echo '?')"
  echo "- command: \`bench/filter-alloc.sh\` (ALLOC_N=$ALLOC_N requests per operation, after 64 of each as warm-up)"
  echo "- cell: allocation calls per request (malloc family, mmap, mremap, brk, pthread_create) and which; below 0.01 per request, the count in ALLOC_N requests; \`-\`: the chain does not offer the operation"
  echo
  printf '| case | filters |'; for o in $OPS; do printf ' %s |' "$o"; done; echo
  printf '|---|---|'; for o in $OPS; do printf -- '--:|'; done; echo
  awk -F'\t' -v ops="$OPS" -v N="$ALLOC_N" '
    { printf "| %s | %s |", $1, $2
      if ($3 !~ /=/) { n = split(ops, o, " "); printf " %s |", $3; for (i = 2; i <= n; i++) printf " |"; print ""; next }
      delete cell
      m = split($3, c, " ")
      for (i = 1; i <= m; i++) { split(c[i], kv, "="); split(kv[2], vw, ":")
        cell[kv[1]] = (vw[1] == 0 ? "0" : vw[1] < N / 100 \
                       ? sprintf("%d in %d %s", vw[1], N, vw[2]) \
                       : sprintf("%.2f %s", vw[1] / N, vw[2])) }
      n = split(ops, o, " ")
      for (i = 1; i <= n; i++) printf " %s |", (o[i] in cell ? cell[o[i]] : "-")
      print "" }' "$scratch/rows"
  if [ "$ALLOC_TRACE" != 0 ]; then
    local c
    for c in "${want[@]}"; do
      [ -s "$scratch/$c.trace" ] || continue
      awk -F'\t' -v c="$c" '$1 == c && $3 ~ /=[1-9]/ { f = 1 } END { exit !f }' \
        "$scratch/rows" || continue
      echo
      echo "## $c: first allocations after the first snapshot"
      echo
      echo '```'
      symbolize < "$scratch/$c.trace"
      echo '```'
    done
  fi
}

if [ -n "${ALLOC_RESULTS:-}" ]; then report | tee "$ALLOC_RESULTS"; else report; fi

if [ "$ALLOC_CHECK_ZERO" = 1 ] &&
   awk -F'\t' '$3 ~ /=/ { m = split($3, c, " ");
     for (i = 1; i <= m; i++) { split(c[i], kv, "="); split(kv[2], vw, ":"); if (vw[1] != 0) bad = 1 } }
     END { exit !bad }' "$scratch/rows"; then
  log "some case allocated on the I/O path"
  exit 1
fi
[ "$failed" = 0 ]
