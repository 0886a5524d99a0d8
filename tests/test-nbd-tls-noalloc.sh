#!/usr/bin/env bash
# The NBD I/O path over TLS does not allocate: test-nbd-no-alloc.sh's check
# (alloc-counter.so LD_PRELOADed into the server: no call to the malloc
# family, mmap, munmap, mremap, brk or pthread_create; no RSS growth) with
# --tls=require and PSK over a Unix socket, so userspace TLS records (the host
# has no kernel TLS).  The TLS handshake itself allocates (gnutls_init and
# the handshake state are GnuTLS's), so the counted window starts once
# four connections are up and have each done one request, and ends before
# they close: inside it, thousands of TLS records of every request type,
# from 512 bytes to 8 MiB, many in flight at once, structured and simple
# replies.  Then, for the record and not checked, what each further
# connection (handshake, a few requests, close) and an nbdcopy cost.
source "${srcdir:-.}/functions.sh"
source "$srcdir/tls-functions.sh"
requires_tls
requires_prog nbdcopy
requires_prog timeout
[ "${UBDKIT_SANITIZED:-no}" = no ] ||
  skip "sanitizer builds allocate in their runtime and reject LD_PRELOAD"
counter="${builddir:-.}/alloc-counter.so"
[ -f "$counter" ] || fail "$counter is not built (make check builds it)"
counter=$(cd "$(dirname "$counter")" && pwd)/$(basename "$counter")
make_tmpdir
export tmp
T=$tmp/tls
tls_setup "$T" || fail "tls-setup.sh failed"

# snapshot N: the server's N-th counter line.
snapshot () {
  local i
  kill -USR1 "$pid_s"
  for (( i=0; i<200; i++ )); do
    grep -q "^seq=$1 " "$tmp/s.alloc" 2>/dev/null && break
    sleep 0.05
  done
  grep "^seq=$1 " "$tmp/s.alloc" || fail "no counters for snapshot $1"
}
rss () {
  awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s ", $2 }' "/proc/$pid_s/status"
  ls /proc/"$pid_s"/task | wc -l
}
symbolize () {
  local line bin off
  while IFS= read -r line; do
    if [[ $line =~ ^(/[^\(]+)\(\+(0x[0-9a-f]+)\) ]] && command -v addr2line >/dev/null; then
      bin=${BASH_REMATCH[1]} off=${BASH_REMATCH[2]}
      echo "$line  $(addr2line -f -i -p -e "$bin" "$off" 2>/dev/null | tr '\n' ' ')"
    else
      echo "$line"
    fi
  done
}
# diff_counts BEFORE AFTER: "key: +N" for each counter that moved.
diff_counts () {
  local kv key
  declare -A b
  for kv in $1; do b[${kv%%=*}]=${kv#*=}; done
  for kv in $2; do
    key=${kv%%=*}
    [ "$key" = seq ] && continue
    [ "${kv#*=}" != "${b[$key]}" ] && echo "$key +$(( ${kv#*=} - ${b[$key]} ))"
  done
  return 0
}

TLS_ENV=(LD_PRELOAD="$counter" UBDKIT_ALLOC_LOG="$tmp/s.alloc" UBDKIT_ALLOC_TRACE=20)
tls_start s unix --tls=require --tls-psk="$T/keys.psk"
unset TLS_ENV
uri=$(psk_uri s alice "$T/keys.psk")
export uri

# The client: four TLS connections, warmed up, then the counted workload
# between the files $tmp/go1 (start) and $tmp/go2 (close).
cat > "$tmp/client.py" <<'PY'
import os, sys, time
import nbd
tmp = os.environ["tmp"]
M = 1 << 20
def wait_for(f):
    while not os.path.exists(f):
        time.sleep(0.02)
hs = []
for i in range(4):
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)
    if i == 3:
        h.set_request_structured_replies(False)
    else:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(os.environ["uri"])
    assert h.get_tls_negotiated()
    h.pwrite(b"w" * 4096, i * 4096)
    assert h.pread(4096, i * 4096) == b"w" * 4096
    hs.append(h)
open(tmp + "/ready1", "w").close()
wait_for(tmp + "/go1")
for rnd in range(3):
    for i, h in enumerate(hs):
        base = (i * 16) * M
        data = os.urandom(M)
        for j in range(8):
            h.pwrite(data, base + j * M, nbd.CMD_FLAG_FUA if j % 2 else 0)
            assert h.pread(M, base + j * M) == data
        for size in (512, 4096, 65536, 8 * M):
            buf = os.urandom(size)
            h.pwrite(buf, base)
            assert h.pread(size, base) == buf
        h.flush()
        h.trim(M, base + 8 * M)
        h.zero(M, base + 9 * M)
        h.cache(M, base)
        if i != 3:
            h.block_status(16 * M, base, lambda ctx, o, e, err: 0)
        try:
            h.pread(4096, 64 * M)
        except nbd.Error:
            pass
        bufs = [nbd.Buffer(65536) for _ in range(64)]
        for k, b in enumerate(bufs):
            h.aio_pread(b, base + k * 65536)
        wbuf = nbd.Buffer.from_bytearray(bytearray(os.urandom(65536)))
        for k in range(32):
            h.aio_pwrite(wbuf, base + 12 * M + k * 65536)
        while h.aio_in_flight() > 0:
            h.poll(-1)
open(tmp + "/ready2", "w").close()
wait_for(tmp + "/go2")
for h in hs:
    h.shutdown()
print("ok")
PY
timeout 300 $NBDSH -c "exec(open('$tmp/client.py').read())" > "$tmp/client.out" 2>&1 &
cpid=$!
for (( i=0; i<600; i++ )); do
  [ -e "$tmp/ready1" ] && break
  kill -0 $cpid 2>/dev/null || { cat "$tmp/client.out"; fail "the client died setting up"; }
  sleep 0.05
done
[ -e "$tmp/ready1" ] || fail "the client did not connect"
s1=$(snapshot 1); r1=$(rss)
touch "$tmp/go1"
for (( i=0; i<6000; i++ )); do
  [ -e "$tmp/ready2" ] && break
  kill -0 $cpid 2>/dev/null || { cat "$tmp/client.out"; fail "the client failed"; }
  sleep 0.05
done
[ -e "$tmp/ready2" ] || fail "the client's workload did not finish"
s2=$(snapshot 2); r2=$(rss)
touch "$tmp/go2"
wait $cpid || { cat "$tmp/client.out"; fail "the client failed"; }
tls_alive s

# For the record: 20 more connections, then nbdcopy over 4.
for i in $(seq 20); do
  $NBDSH -c 'h.set_uri_allow_local_file(True)' -c "h.connect_uri('$uri')" \
    -c 'h.pread(4096, 0)' || fail "connection $i"
done
s3=$(snapshot 3)
head -c $((8 << 20)) /dev/urandom > "$tmp/src.img"
timeout 120 nbdcopy --connections=4 "$tmp/src.img" "$uri" || fail "nbdcopy in"
s4=$(snapshot 4)
echo "per 20 connections (handshake, one read, close): $(diff_counts "$s2" "$s3" | tr '\n' ' ')"
echo "nbdcopy, 4 connections, 8 MiB: $(diff_counts "$s3" "$s4" | tr '\n' ' ')"

read -r rss1 anon1 file1 thr1 <<< "$r1"
read -r rss2 anon2 file2 thr2 <<< "$r2"
echo "VmRSS $rss1 -> $rss2 kB (anon $anon1 -> $anon2), threads $thr1 -> $thr2 during the counted window"
moved=$(diff_counts "$s1" "$s2")
if [ -n "$moved" ]; then
  echo "$moved" | sed 's/^/calls during TLS I\/O: /' >&2
  echo "first call sites (alloc-counter traces):" >&2
  grep -v '^seq=' "$tmp/s.alloc" | symbolize | head -80 >&2
  fail "the TLS I/O path allocated"
fi
echo "ok - no allocation during TLS I/O on four established connections"
[ "$thr1" = "$thr2" ] || fail "thread count changed"
if grep -q 'mlock: all current and future memory locked' "$tmp/s.log"; then
  [ "$rss2" -le "$rss1" ] || fail "RSS grew by $((rss2 - rss1)) kB under mlockall"
else
  [ "$anon2" -le $((anon1 + 256)) ] || fail "RssAnon grew by $((anon2 - anon1)) kB"
fi
echo "ok - no RSS growth during TLS I/O"
