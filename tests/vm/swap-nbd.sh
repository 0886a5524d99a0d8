# Swap through the kernel NBD client: `ubdkit serve -U SOCK file
# file=/dev/vdb`, nbd-client -swap, a hog of 1.5 x RAM.
. "$VMLIB"
no_other_swap
[ -b /dev/vdb ] || fail "no /dev/vdb"
"$UBDKIT" serve $PROT -U /tmp/nbd.sock --daemonize -P /tmp/serve.pid -t 1 \
  --depth 8 --buffer-size 128k file file=/dev/vdb $FILE_OPTS || fail "ubdkit serve"
pid=$(cat /tmp/serve.pid)
nbd-client -N '' -unix /tmp/nbd.sock /dev/nbd0 -swap >/tmp/nbdc.out 2>&1 ||
  { cat /tmp/nbdc.out; fail "nbd-client -swap"; }
mkswap /dev/nbd0 >/dev/null || fail "mkswap /dev/nbd0"
swapon /dev/nbd0 || fail "swapon /dev/nbd0"
hog=$(hog_mb)
run_hog "$hog" swap-nbd "${HOG_TIMEOUT:-240}" || fail "memhog $hog MiB with swap on /dev/nbd0"
swap_report
alive "$pid" swap-nbd
swapoff /dev/nbd0 || fail "swapoff /dev/nbd0"
roundtrip /dev/nbd0 swap-nbd
nbd-client -d /dev/nbd0 >/dev/null 2>&1 || fail "nbd-client -d"
kill "$pid"
ok "swap on nbd (ubdkit serve, file backend on a virtio disk): ${hog} MiB hog passed"
