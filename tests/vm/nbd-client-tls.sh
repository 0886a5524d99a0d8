# The kernel NBD client over TLS, with kernel TLS on ubdkit's side (inside
# the test VM; see tests/test-vm-nbd-tls.sh).  $TLSDIR holds tls-setup.sh's
# certificates.  ubdkit serve --tls=require X.509 on 127.0.0.1:10809;
# nbd-client (which does the TLS 1.2 handshake itself and proxies the
# kernel's socket) attaches /dev/nbd0 with a client certificate; ext4
# made, written, fsck'd, checksums kept across a remount; detached.  Then
# nbdinfo and an nbdcopy round trip over TLS, and ubdkit's -v log must say
# kTLS for those connections; --tls-ktls=off says userspace TLS records.
. "$VMLIB"

[ -d /sys/module/tls ] || { echo "SKIP: no tls module in $VMTEST_KERNEL"; exit 77; }
ok "tls module loaded"

# start NAME ARGS...: ubdkit serve -v ARGS, log /tmp/NAME.err, pid in $NAME.
start () {
  _n=$1; shift
  "$UBDKIT" serve -v "$@" 2>/tmp/$_n.err &
  eval "$_n=$!"
  for _i in $(seq 100); do
    grep -q 'ready:' /tmp/$_n.err && return 0
    kill -0 $! 2>/dev/null || { cat /tmp/$_n.err; fail "ubdkit serve $* exited early"; }
    sleep 0.1
  done
  fail "ubdkit serve $* not ready after 10 s"
}

C=$TLSDIR/client
start srv --bind 127.0.0.1 -p 10809 --tls=require --tls-certificates="$TLSDIR/server" \
  --tls-verify-peer memory size=256M

nbd-client -N '' -certfile "$C/client-cert.pem" -keyfile "$C/client-key.pem" \
  -cacertfile "$C/ca-cert.pem" -tlshostname localhost 127.0.0.1 10809 /dev/nbd0 ||
  { cat /tmp/srv.err; fail "nbd-client over TLS"; }
[ "$(blockdev --getsize64 /dev/nbd0)" = 268435456 ] ||
  fail "/dev/nbd0 size $(blockdev --getsize64 /dev/nbd0), expected 256M"
ok "nbd0 attached over TLS with the right size"
grep 'TLS' /tmp/srv.err | tail -3

mkfs.ext4 -q -F /dev/nbd0 || fail "mkfs.ext4"
mkdir -p /mnt/t
mount -t ext4 /dev/nbd0 /mnt/t || fail "mount"
for i in 1 2 3 4; do
  dd if=/dev/urandom of=/mnt/t/f$i bs=64k count=$((i * 16)) 2>/dev/null || fail "writing f$i"
done
(cd /mnt/t && md5sum f1 f2 f3 f4) > /tmp/sums
sync
umount /mnt/t || fail "umount"
echo 3 > /proc/sys/vm/drop_caches
e2fsck -f -n /dev/nbd0 >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "e2fsck"; }
mount -t ext4 /dev/nbd0 /mnt/t || fail "remount"
(cd /mnt/t && md5sum -c /tmp/sums) || fail "checksums after remount"
umount /mnt/t
ok "ext4 over nbd-client TLS: written, fsck clean, checksums kept across remount"
# A raw checksum through the device, then the same range over libnbd.
dd if=/dev/urandom of=/tmp/raw bs=1M count=8 2>/dev/null
dd if=/tmp/raw of=/dev/nbd0 bs=1M seek=200 conv=fsync 2>/dev/null || fail "raw write"
nbd-client -d /dev/nbd0 || fail "nbd-client -d"
ok "nbd0 detached"

U="nbds://localhost:10809/?tls-certificates=$C"
k0=$(grep TLS /tmp/srv.err | grep -cE ': kTLS$' || true)
[ "$(nbdinfo --size "$U")" = 268435456 ] || fail "nbdinfo over TLS"
nbdcopy "$U" /tmp/all.img || fail "nbdcopy out over TLS"
dd if=/tmp/all.img of=/tmp/raw2 bs=1M skip=200 count=8 2>/dev/null
cmp /tmp/raw /tmp/raw2 || fail "what nbd-client wrote reads back different over libnbd"
dd if=/dev/urandom of=/tmp/in.img bs=1M count=32 2>/dev/null
truncate -s 256M /tmp/in.img
nbdcopy --connections=4 /tmp/in.img "$U" || fail "nbdcopy in over TLS"
nbdcopy --connections=4 "$U" /tmp/out.img || fail "nbdcopy out over TLS"
cmp /tmp/in.img /tmp/out.img || fail "nbdcopy round trip over TLS differs"
rm -f /tmp/all.img /tmp/in.img /tmp/out.img
ok "nbdinfo, nbdcopy round trip over TLS"
k1=$(grep TLS /tmp/srv.err | grep -cE ': kTLS$' || true)
grep TLS /tmp/srv.err | tail -4
[ "$k1" -ge $((k0 + 3)) ] ||
  fail "ubdkit's log says kTLS for only $((k1 - k0)) libnbd connections (nbdinfo and two nbdcopy runs)"
ok "ubdkit used kTLS for the libnbd connections"
grep TLS /tmp/srv.err | grep -q 'userspace TLS records' &&
  echo "note: some connections used userspace TLS records (the nbd-client one?)"
kill -TERM $srv; wait $srv || fail "ubdkit exited non-zero on SIGTERM"
grep -iE 'error|warn' /tmp/srv.err && fail "the server logged errors or warnings"

# Every AEAD kTLS is given, in TLS 1.3 and 1.2, X.509 and PSK: an 8 MiB
# round trip each, and the log names the cipher and says kTLS.
dd if=/dev/urandom of=/tmp/c.img bs=1M count=8 2>/dev/null
port=10820
for spec in "x509 NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305 TLS1.3 CHACHA20-POLY1305" \
            "x509 NORMAL:-VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305 TLS1.2 CHACHA20-POLY1305" \
            "x509 NORMAL:-CIPHER-ALL:+AES-128-GCM TLS1.3 AES-128-GCM" \
            "psk NORMAL:-CIPHER-ALL:+AES-128-GCM:+ECDHE-PSK:+PSK TLS1.3 AES-128-GCM" \
            "psk NORMAL:-VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM:+ECDHE-PSK:+PSK TLS1.2 AES-256-GCM"; do
  set -- $spec
  port=$((port + 1))
  if [ "$1" = psk ]; then
    start c$port --bind 127.0.0.1 -p $port --tls=require --tls-psk="$TLSDIR/keys.psk" \
      --tls-priority="$2" memory size=8M
    u="nbds://alice@localhost:$port/?tls-psk-file=$TLSDIR/keys.psk"
  else
    start c$port --bind 127.0.0.1 -p $port --tls=require --tls-certificates="$TLSDIR/server" \
      --tls-priority="$2" memory size=8M
    u="nbds://localhost:$port/?tls-certificates=$C"
  fi
  nbdcopy /tmp/c.img "$u" && nbdcopy "$u" /tmp/c2.img || fail "$spec: nbdcopy"
  cmp /tmp/c.img /tmp/c2.img || fail "$spec: round trip differs"
  grep -q ": TLS $3 $4, .*: kTLS\$" /tmp/c$port.err ||
    { cat /tmp/c$port.err; fail "$spec: no '$3 $4 ... kTLS' line"; }
  eval "kill -TERM \$c$port; wait \$c$port" || fail "$spec: server exit status"
  grep -iE 'error|warn' /tmp/c$port.err && fail "$spec: the server logged errors or warnings"
  rm -f /tmp/c2.img
  ok "kTLS with $1 $3 $4: 8 MiB round trip"
done

start off --bind 127.0.0.1 -p 10810 --tls=require --tls-certificates="$TLSDIR/server" \
  --tls-ktls=off memory size=64M
[ "$(nbdinfo --size "nbds://localhost:10810/?tls-certificates=$C")" = 67108864 ] ||
  fail "nbdinfo with --tls-ktls=off"
grep TLS /tmp/off.err | grep -q 'userspace TLS records' || fail "--tls-ktls=off: no 'userspace TLS records' line"
grep TLS /tmp/off.err | grep -qE ': kTLS$' && fail "--tls-ktls=off used kTLS"
kill -TERM $off; wait $off
ok "--tls-ktls=off: userspace TLS records"
if dmesg | grep -E 'I/O error|Other side returned error|nbd.*(timed out|Receive control failed)'; then
  fail "the kernel saw I/O errors from the NBD device (above)"
fi
ok "no I/O errors in the kernel log"
