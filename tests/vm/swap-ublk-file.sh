# Swap on a ublk device served by `ubdkit add file file=/dev/vda` (a raw
# virtio disk), and a memory hog of 1.5 x RAM: every page must come back.
. "$VMLIB"
no_other_swap
[ -b /dev/vda ] || fail "no /dev/vda"
add_dev dev $PROT -d 16 --max-io 128k file file=/dev/vda $FILE_OPTS
pid=$(server_pid "$dev")
mkswap "$dev" >/dev/null || fail "mkswap $dev"
swapon "$dev" || fail "swapon $dev"
hog=$(hog_mb)
run_hog "$hog" swap-ublk-file "${HOG_TIMEOUT:-240}" || fail "memhog $hog MiB with swap on $dev"
swap_report
alive "$pid" swap-ublk-file
swapoff "$dev" || fail "swapoff $dev"
roundtrip "$dev" swap-ublk-file
del_dev "$dev"
ok "swap on ublk (file backend on a virtio disk): ${hog} MiB hog in ${VMTEST_MEM_MB} MiB passed"
