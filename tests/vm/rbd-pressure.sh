# The rbd backend under memory pressure: ext4 on a ublk device over rbd/mp,
# the server's threads (Ceph's included) IO_FLUSHERs with memory locked.
# (1) Dirty writeback in a cgroup with memory.high far below the data
#     (memory.max twice that, as a backstop): the writer's dirty pages must
#     be written back through the server and the network to the cluster
#     before it may dirty more.  memory.high, not memory.max alone: over
#     memory.max the kernel's memcg reclaim gives up after a few rounds
#     without progress and OOM-kills the writer, however well the server
#     serves, once writeback is slow (a CI run with the ASan build did;
#     with the delay filter at 300 ms a write, memory.max=16M killed dd
#     within 0.6-0.9 s at queue depths 64 and 16), where over memory.high
#     it throttles the writer until writeback catches up (docs/ceph.md).
# (2) The whole guest out of memory: a hog of RAM + 256 MiB (no swap,
#     overcommit allowed) while a writer keeps writing through the page
#     cache, each file fsync'd: the OOM killer takes the hog and nothing
#     else, files are written while the hog runs, and all are there.
# The files' checksums go to the results ("mp MD5 FILE"); tests/test-vm-rbd.sh
# finds the same files in `rbd export` of rbd/mp.
. "$VMLIB"
conf=/etc/ceph/vm.conf
result () { echo "$*" >> /tmp/results; }
mb=${MP_MB:-48}
high=${MP_HIGH:-16M}
max=${MP_MAX:-32M}

add_dev dev rbd pool=rbd image=mp conf=$conf
pid=$(server_pid "$dev")
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 $dev"
mkdir -p /mnt/mp
mount "$dev" /mnt/mp || fail "mount $dev"
# The source, on tmpfs, outside the cgroup.
dd if=/dev/urandom of=/tmp/mp.src bs=1M count=$mb 2>/dev/null || fail "the source"
src=$(md5sum < /tmp/mp.src | cut -d' ' -f1)

# --- (1) writeback under memory.high.
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/mp
echo "$high" > /sys/fs/cgroup/mp/memory.high
echo "$max" > /sys/fs/cgroup/mp/memory.max
t0=$(uptime_s)
st=0
timeout -s KILL "${HOG_TIMEOUT:-240}" sh -c "echo \$\$ > /sys/fs/cgroup/mp/cgroup.procs &&
  exec dd if=/tmp/mp.src of=/mnt/mp/wb bs=1M conv=fsync 2>/dev/null" || st=$?
dt=$(since "$t0")
peak=$(cat /sys/fs/cgroup/mp/memory.peak 2>/dev/null || echo ?)
events=$(tr '\n' ' ' < /sys/fs/cgroup/mp/memory.events)
echo "  cgroup mp: memory.high $(cat /sys/fs/cgroup/mp/memory.high), memory.max $(cat /sys/fs/cgroup/mp/memory.max), peak $peak, events: $events"
echo "TIME rbd-writeback mem=${VMTEST_MEM_MB}MiB write=${mb}MiB memory.high=$high memory.max=$max status=$st $dt s"
if [ $st != 0 ]; then
  grep -E '^(anon|file|file_dirty|file_writeback|kernel|slab) ' /sys/fs/cgroup/mp/memory.stat | tr '\n' ' ' | sed 's/^/  memory.stat: /'
  echo
  fail "dd of $mb MiB in a cgroup with memory.high=$high memory.max=$max: status $st"
fi
# The writer was held at the mark (else nothing here needed writeback to
# go on), and never killed.
nhigh=$(awk '$1 == "high" { print $2 }' /sys/fs/cgroup/mp/memory.events)
[ "${nhigh:-0}" -gt 0 ] || fail "memory.high was never reached (events: $events): nothing was throttled"
awk '$1 == "oom_kill" && $2 != 0 { exit 1 }' /sys/fs/cgroup/mp/memory.events ||
  fail "the cgroup's OOM killer ran (events: $events)"
check_flusher "$pid" set "after the writeback"
ok "dirty writeback of $mb MiB through ext4 on rbd from a cgroup held at memory.high=$high ($nhigh times; peak $peak bytes, memory.max=$max): $dt s"

# --- (2) the guest out of memory while a writer writes: 8 MiB files,
# each fsync'd, one after another until the hog is gone (at most 16).
no_other_swap
echo 1 > /proc/sys/vm/overcommit_memory
: > /tmp/mp.done
rm -f /tmp/mp.stop
(i=0
 while [ ! -e /tmp/mp.stop ] && [ $i -lt 16 ]; do
   dd if=/tmp/mp.src of=/mnt/mp/oom$i bs=1M count=8 conv=fsync 2>/dev/null || { echo "write of oom$i failed"; exit 1; }
   echo "oom$i $(uptime_s)" >> /tmp/mp.done
   i=$((i + 1))
 done) &
writer=$!
# The writer under way before the hog starts.
while [ ! -s /tmp/mp.done ]; do kill -0 $writer 2>/dev/null || fail "the writer failed"; sleep 0.1; done
hog=$(( $(meminfo_mb MemTotal) + 256 ))
h0=$(uptime_s)
st=0
run_hog "$hog 1" rbd-oom "${HOG_TIMEOUT:-240}" || st=$?
h1=$(uptime_s)
touch /tmp/mp.stop
hogpid=$(awk '/^memhog: pid/ { print $3; exit }' /tmp/hog.out | tr -d ,)
dmesg | grep -E 'Killed process|oom-kill:' | sed 's/^/  /'
if dmesg | grep -E 'Killed process' | grep -qv "Killed process $hogpid (memhog)"; then
  fail "the OOM killer took another process than the hog"
fi
dmesg | grep -qE "Killed process $hogpid \\(memhog\\)" ||
  fail "memhog (pid $hogpid, status $st) was not killed by the OOM killer"
[ "$st" = 137 ] || fail "memhog exited with $st, not 137 (SIGKILL)"
alive "$pid" rbd-oom
wait $writer || fail "the writer under the OOM failed"
during=$(awk -v a="$h0" -v b="$h1" '$2 > a && $2 <= b' /tmp/mp.done | wc -l)
[ "$during" -ge 1 ] || { cat /tmp/mp.done; fail "no file was written while the hog ran ($h0 to $h1)"; }
echo "  server $pid: oom_score_adj $(cat /proc/$pid/oom_score_adj), VmRSS $(status_kb "$pid" VmRSS) kB, VmLck $(status_kb "$pid" VmLck) kB"
check_flusher "$pid" set "after the OOM"
ok "OOM: the hog ($hog MiB) was killed, the server $pid lives; $during files of 8 MiB written and fsync'd while it ran, $(wc -l < /tmp/mp.done) in all"

# Both files, from the device (not the page cache), then fsck.
sync
echo 3 > /proc/sys/vm/drop_caches
src8=$(dd if=/tmp/mp.src bs=1M count=8 2>/dev/null | md5sum | cut -d' ' -f1)
for f in wb $(awk '{ print $1 }' /tmp/mp.done); do
  [ $f = wb ] && want=$src || want=$src8
  got=$(md5sum < /mnt/mp/$f | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "/mnt/mp/$f: md5 $got, not the source's $want"
  result mp "$got" "$f"
done
umount /mnt/mp
e2fsck -f -n "$dev" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "fsck $dev"; }
del_dev "$dev"
ok "every file read back from rbd/mp with the source's checksum; fsck clean"
dd if=/tmp/results of=/dev/vda conv=notrunc 2>/dev/null || fail "cannot write the results to /dev/vda"
