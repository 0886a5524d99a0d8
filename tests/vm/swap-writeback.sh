# Dirty writeback under a cgroup's memory limit: ext4 on a ublk device
# (file backend on /dev/vda); a shell in a cgroup with memory.max far below
# the data writes 256 MiB through the page cache with conv=fsync; the file
# must read back (after drop_caches) with the source's checksum.  The source
# is random data on a second virtio disk, read with O_DIRECT, so it takes no
# RAM of its own.
. "$VMLIB"
[ -b /dev/vda ] && [ -b /dev/vdb ] || fail "need /dev/vda and /dev/vdb"
mb=${WB_MB:-256}
limit=${WB_LIMIT:-32M}
dd if=/dev/urandom of=/dev/vdb bs=1M count=$mb oflag=direct 2>/dev/null || fail "source"
src=$(dd if=/dev/vdb bs=1M count=$mb iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
add_dev dev $PROT -d 16 --max-io 128k file file=/dev/vda $FILE_OPTS
pid=$(server_pid "$dev")
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 $dev"
mkdir -p /mnt/wb
mount "$dev" /mnt/wb || fail "mount $dev"
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/wb
echo "$limit" > /sys/fs/cgroup/wb/memory.max
t0=$(uptime_s)
st=0
timeout -s KILL "${HOG_TIMEOUT:-240}" sh -c "echo \$\$ > /sys/fs/cgroup/wb/cgroup.procs &&
  exec dd if=/dev/vdb of=/mnt/wb/f bs=1M count=$mb iflag=direct conv=fsync 2>/dev/null" || st=$?
dt=$(since "$t0")
echo "  cgroup wb: memory.max $(cat /sys/fs/cgroup/wb/memory.max), peak $(cat /sys/fs/cgroup/wb/memory.peak 2>/dev/null || echo ?)," \
  "events: $(tr '\n' ' ' < /sys/fs/cgroup/wb/memory.events)"
echo "TIME swap-writeback $MODE mem=${VMTEST_MEM_MB}MiB write=${mb}MiB memory.max=$limit status=$st $dt s"
[ $st = 0 ] || fail "dd of $mb MiB in a cgroup with memory.max=$limit: status $st"
sync
echo 3 > /proc/sys/vm/drop_caches
got=$(md5sum /mnt/wb/f | cut -d' ' -f1)
[ "$got" = "$src" ] || fail "written file's md5 $got differs from the source's $src"
alive "$pid" swap-writeback
umount /mnt/wb
del_dev "$dev"
ok "dirty writeback of $mb MiB in a cgroup with memory.max=$limit through ext4 on ublk"
