# The OOM killer takes the hog, never the server: swap on a ublk device
# (file backend on a small virtio disk), overcommit allowed, a hog of
# RAM + swap + 256 MiB.  Afterwards the server runs and the device serves.
. "$VMLIB"
no_other_swap
echo 1 > /proc/sys/vm/overcommit_memory
add_dev dev $PROT -d 16 --max-io 128k file file=/dev/vda $FILE_OPTS
pid=$(server_pid "$dev")
mkswap "$dev" >/dev/null || fail "mkswap $dev"
swapon "$dev" || fail "swapon $dev"
hog=$(( $(meminfo_mb MemTotal) + $(meminfo_mb SwapTotal) + 256 ))
st=0
run_hog "$hog 1" swap-oom "${HOG_TIMEOUT:-240}" || st=$?
hogpid=$(awk '/^memhog: pid/ { print $3; exit }' /tmp/hog.out | tr -d ,)
dmesg | grep -E 'Killed process|oom-kill:' | sed 's/^/  /'
if dmesg | grep -qE 'Killed process [0-9]+ \(ubdkit\)'; then
  fail "the OOM killer took the ubdkit server"
fi
dmesg | grep -qE "Killed process $hogpid \\(memhog\\)" ||
  fail "memhog (pid $hogpid, status $st) was not killed by the OOM killer"
[ "$st" = 137 ] || fail "memhog exited with $st, not 137 (SIGKILL)"
alive "$pid" swap-oom
echo "  server $pid: oom_score_adj $(cat /proc/$pid/oom_score_adj), VmRSS $(status_kb "$pid" VmRSS) kB"
swap_report
swapoff "$dev" || fail "swapoff $dev"
roundtrip "$dev" swap-oom
del_dev "$dev"
ok "OOM: the hog ($hog MiB) was killed, the server $pid lives and serves"
