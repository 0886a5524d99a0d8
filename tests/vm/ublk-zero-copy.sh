# Zero copy (UBLK_F_AUTO_BUF_REG): where the kernel offers it, the file
# backend reads and writes the request's own pages: fio verify and ext4 on
# it, the fallback when the kernel cannot register a buffer itself, no
# allocation per request (alloc-counter.so in the server), --no-zero-copy,
# and the backends that keep the copy path.  Where the kernel lacks it
# (6.12): devices copy, and --zero-copy is refused with the reason.
. "$VMLIB"
dd if=/dev/zero of=/tmp/zc.img bs=1M count=0 seek=256 2>/dev/null

verify () { # DEV WHAT
  fio --name=verify --filename="$1" --ioengine=io_uring --direct=1 \
      --rw=randrw --bs=4k-1M --iodepth=32 --size=128M --verify=crc32c \
      --verify_fatal=1 --output=/tmp/fio.out >/dev/null 2>&1 ||
    { cat /tmp/fio.out; fail "fio verify: $2"; }
  grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio errors: $2"; }
}

if ! "$UBDKIT" features | grep -qw AUTO_BUF_REG; then
  add_dev dev file file=/tmp/zc.img
  case "$(dev_flags "$dev")" in *AUTO_BUF_REG*) fail "zero copy on a kernel without it" ;; esac
  verify "$dev" "copy path, no AUTO_BUF_REG in the kernel"
  del_dev "$dev"
  ok "without AUTO_BUF_REG in the kernel ($(uname -r)): the file backend copies"
  refused "lacks UBLK_F_AUTO_BUF_REG" --zero-copy file file=/tmp/zc.img
  ok "--zero-copy refused: $(grep -o 'lacks.*' /tmp/refused.err)"
  exit 0
fi

# The default: zero copy, with a direct and a buffered file.
for opt in direct=true direct=false; do
  add_dev dev -q 2 file file=/tmp/zc.img $opt
  case "$(dev_flags "$dev")" in *AUTO_BUF_REG*) ;; *) fail "no AUTO_BUF_REG by default ($opt): $(dev_flags "$dev")" ;; esac
  verify "$dev" "zero copy, $opt"
  ok "zero copy by default, fio randrw 4k-1M verify, 2 queues: file $opt"
  del_dev "$dev"
done
add_dev dev file file=/tmp/zc.img direct=true
fs_roundtrip "$dev"
ok "ext4 round trip on a zero-copy device"
del_dev "$dev"

# The kernel's own registration made to fail: we register, and nothing fails.
# (--log=stderr: the server's lines while serving go to /tmp/add.err, not
# to syslog.)
UBDKIT_TEST_ZC_FALLBACK=1 "$UBDKIT" add --log=stderr -d 16 file file=/tmp/zc.img \
  >/tmp/dev 2>/tmp/add.err || { cat /tmp/add.err; fail "add with the fallback"; }
dev=$(cat /tmp/dev)
verify "$dev" "zero copy, fallback registration"
del_dev "$dev"
grep -q "registering it ourselves" /tmp/add.err || { cat /tmp/add.err; fail "the fallback path was not taken"; }
! grep -q "REGISTER_IO_BUF" /tmp/add.err || { cat /tmp/add.err; fail "(un)registration errors"; }
ok "the kernel's registration failing: ours takes over, fio verify clean"

# ... and ours failing for want of memory: tried again, nothing fails.
UBDKIT_TEST_ZC_FALLBACK=enomem "$UBDKIT" add --log=stderr -d 16 file file=/tmp/zc.img \
  >/tmp/dev 2>/tmp/add.err || { cat /tmp/add.err; fail "add with the ENOMEM fallback"; }
dev=$(cat /tmp/dev)
verify "$dev" "zero copy, our registration out of memory once per request"
del_dev "$dev"
grep -q "REGISTER_IO_BUF: Cannot allocate memory: trying again" /tmp/add.err ||
  { cat /tmp/add.err; fail "the retry after ENOMEM was not taken"; }
ok "our registration out of memory: tried again a millisecond later, fio verify clean"

# No allocation per request: counters of the server before and after.
if [ "${UBDKIT_SANITIZED:-no}" = no ] && [ -f /alloc-counter.so ]; then
  LD_PRELOAD=/alloc-counter.so UBDKIT_ALLOC_LOG=/tmp/zc.alloc \
    "$UBDKIT" add -q 2 file file=/tmp/zc.img direct=true >/tmp/dev 2>/tmp/add.err ||
    { cat /tmp/add.err; fail "add with alloc-counter.so"; }
  dev=$(cat /tmp/dev)
  pid=$(server_pid "$dev")
  [ -n "$pid" ] || fail "no server pid for $dev"
  counters () { # N: the N-th snapshot, without its sequence number
    kill -USR1 "$pid"
    for i in $(seq 100); do grep -q "^seq=$1 " /tmp/zc.alloc 2>/dev/null && break; sleep 0.05; done
    grep "^seq=$1 " /tmp/zc.alloc | sed 's/^seq=[0-9]* //'
  }
  dd if=/dev/urandom of="$dev" bs=1M count=8 oflag=direct 2>/dev/null
  before=$(counters 1)
  [ -n "$before" ] || fail "no counters from the server"
  verify "$dev" "zero copy under alloc-counter.so"
  fio --name=seq --filename="$dev" --ioengine=io_uring --direct=1 --rw=readwrite \
      --bs=1M --iodepth=16 --size=128M >/dev/null 2>&1 || fail "fio 1M readwrite"
  /usr/sbin/blkdiscard -o 0 -l 4M "$dev"
  after=$(counters 2)
  echo "before: $before"
  echo "after:  $after"
  [ "$before" = "$after" ] || fail "the zero-copy server allocated while serving"
  del_dev "$dev"
  ok "zero copy: no allocation in the server across fio verify, 1M I/O and discard"
else
  echo "note: allocation count not checked (sanitizer build or no alloc-counter.so)"
fi

# Switched off, and the backends that need the bytes.
add_dev dev --no-zero-copy file file=/tmp/zc.img
case "$(dev_flags "$dev")" in *AUTO_BUF_REG*) fail "--no-zero-copy still zero copy" ;; esac
verify "$dev" "--no-zero-copy"
del_dev "$dev"
ok "--no-zero-copy: the copy path, fio verify clean"
add_dev dev memory size=128M
case "$(dev_flags "$dev")" in *AUTO_BUF_REG*) fail "a memory backend with zero copy" ;; esac
del_dev "$dev"
refused "needs the data in its own memory" --zero-copy memory size=16M
ok "memory keeps the copy path; --zero-copy refused for it"
