#!/bin/bash
# ublk vs the kernel loop device, in one VM boot (tests/vm/vm-run, qemu TCG).
#
# The same fio workloads run on /dev/ublkb0 (ubdkit's file backend) and on a
# loop device (direct I/O) over the same backing file in the guest's tmpfs;
# we report IOPS, MiB/s and the ratio ublk/loop.  Software emulation makes
# absolute numbers meaningless: only ratios within one boot are.
#
# Usage: bench/ublk-bench.sh [RUNTIME_SECONDS]   (default 8)
#   BENCH_BACKING=tmpfs (default): the backing file is in the guest's tmpfs,
#     the file backend buffered: every byte costs ublk one copy more than
#     loop (bio pages -> request buffer -> tmpfs page, against loop's one),
#     and under software emulation copies dominate 1 MiB requests.
#   BENCH_BACKING=disk: the backing file is on ext4 on a virtio disk, and
#     both sides use O_DIRECT (file backend direct=true, loop
#     --direct-io=on): the deployment case, a disk image on a real device.
# Output: a Markdown table on stdout and in bench/results/ublk-DATE[-disk].md.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-8}
export UBDKIT=${UBDKIT:-$top/ubdkit}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

backing=${BENCH_BACKING:-tmpfs}
vmargs=()
case $backing in
  tmpfs) dir=/tmp; fileopt= ;;
  disk)
    truncate -s 640M "$tmp/disk.img"
    vmargs=(--disk "$tmp/disk.img")
    dir=/mnt; fileopt=direct=true ;;
  *) echo "BENCH_BACKING=$backing: tmpfs or disk" >&2; exit 2 ;;
esac

cat > "$tmp/inner.sh" <<EOS
set -e
if [ $backing = disk ]; then
  mkfs.ext4 -q -F /dev/vda
  mkdir -p /mnt && mount /dev/vda /mnt
fi
truncate -s 512M $dir/back.img
dd if=/dev/urandom of=$dir/back.img bs=1M count=512 conv=notrunc,fsync 2>/dev/null
run () { # NAME DEV fio-args...
  n=\$1; d=\$2; shift 2
  fio --name=\$n --filename=\$d --ioengine=io_uring --direct=1 --time_based \
      --runtime=$runtime --size=512M --group_reporting --minimal "\$@" |
    awk -F';' -v n="\$n" '{ printf "RESULT %s %d %d %d %d\n", n, \$8, \$49, \$7, \$48 }'
}
workloads () { # DEV PREFIX
  run \$2:randread4k  \$1 --rw=randread  --bs=4k --iodepth=32
  run \$2:randwrite4k \$1 --rw=randwrite --bs=4k --iodepth=32
  run \$2:seqread1m   \$1 --rw=read      --bs=1M --iodepth=8
  run \$2:seqwrite1m  \$1 --rw=write     --bs=1M --iodepth=8
}
dev=\$(\$UBDKIT add -q 2 -d 64 --max-io 1M file file=$dir/back.img $fileopt 2>/dev/null)
workloads \$dev ublk
\$UBDKIT del --all
dev=\$(\$UBDKIT add --poll 100 -q 2 -d 64 --max-io 1M file file=$dir/back.img $fileopt 2>/dev/null)
workloads \$dev poll
\$UBDKIT del --all
loopdev=\$(/usr/sbin/losetup --direct-io=on -f --show $dir/back.img)
workloads \$loopdev loop
/usr/sbin/losetup -d \$loopdev
EOS

"$top/tests/vm/vm-run" --timeout 900 --mem 2048 --carry fio \
  ${vmargs[@]+"${vmargs[@]}"} "$tmp/inner.sh" \
  > "$tmp/console.log" 2>&1 || { tail -40 "$tmp/console.log"; exit 1; }

mkdir -p "$top/bench/results"
suffix=
if [ $backing = disk ]; then suffix=-disk; fi
out="$top/bench/results/ublk-$(date -u +%F)$suffix.md"
n=2
while [ -e "$out" ]; do   # never overwrite an earlier run of the day
  out="$top/bench/results/ublk-$(date -u +%F)$suffix-$n.md"
  n=$((n + 1))
done
{
  echo "# ublk vs loop, one VM boot (qemu TCG, 2 vCPUs, backing file: $backing)"
  echo
  echo "date $(date -u '+%F %H:%M') UTC; host $(uname -r), $(nproc) CPUs;" \
       "ubdkit $(git -C "$top" describe --always --dirty); fio runtime ${runtime} s;" \
       "ubdkit add -q 2 -d 64 --max-io 1M file $fileopt; loop with --direct-io=on"
  echo
  echo "ublk: the default (queue threads sleep when idle); ublk --poll 100: the"
  echo "same device served by queue threads that poll adaptively (up to 100 us)."
  echo
  echo "| workload | ublk IOPS | ublk --poll 100 IOPS | loop IOPS | ublk MiB/s | ublk --poll 100 MiB/s | loop MiB/s | ublk/loop | ublk --poll 100/loop |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|"
  grep '^RESULT' "$tmp/console.log" | awk '
    { split($2, a, ":"); dev = a[1]; w = a[2];
      iops[dev, w] = $3 + $4; bw[dev, w] = ($5 + $6) / 1024; ws[w] = 1 }
    END {
      n = split("randread4k randwrite4k seqread1m seqwrite1m", order, " ")
      for (i = 1; i <= n; i++) { w = order[i]
        r = iops["loop", w] ? iops["ublk", w] / iops["loop", w] : 0
        q = iops["loop", w] ? iops["poll", w] / iops["loop", w] : 0
        printf "| %s | %d | %d | %d | %.1f | %.1f | %.1f | %.2f | %.2f |\n", w,
          iops["ublk", w], iops["poll", w], iops["loop", w], bw["ublk", w],
          bw["poll", w], bw["loop", w], r, q } }'
} | tee "$out"
