# Swap on a ublk device served by the memory backend.  Its storage is
# reserved and locked at start, so it is RAM taken away from everything
# else: the hog is 1.5 x what is left (MemAvailable after the device is
# up), capped so that what overflows RAM fits in the device with room to
# spare (MemAvailable + 3/4 of the swap size).
. "$VMLIB"
no_other_swap
size=${SWAP_MEM_MB:-160}
add_dev dev $PROT -d 16 --max-io 128k memory size=${size}M
pid=$(server_pid "$dev")
mkswap "$dev" >/dev/null || fail "mkswap $dev"
swapon "$dev" || fail "swapon $dev"
avail=$(meminfo_mb MemAvailable)
hog=$((avail * 3 / 2))
[ $hog -le $((avail + size * 3 / 4)) ] || hog=$((avail + size * 3 / 4))
hog=${HOG_MB:-$hog}
echo "  memory backend ${size} MiB, MemAvailable after start ${avail} MiB, hog ${hog} MiB"
run_hog "$hog" swap-ublk-memory "${HOG_TIMEOUT:-240}" || fail "memhog $hog MiB with swap on $dev"
swap_report
alive "$pid" swap-ublk-memory
swapoff "$dev" || fail "swapoff $dev"
roundtrip "$dev" swap-ublk-memory
del_dev "$dev"
ok "swap on ublk (memory backend ${size} MiB): ${hog} MiB hog passed"
