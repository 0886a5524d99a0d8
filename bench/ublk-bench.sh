#!/bin/bash
# ublk against the kernel loop device on each test kernel, one VM boot per
# kernel (tests/vm/vm-run, qemu TCG), all in one run.
#
# The backing store is a raw virtio disk (/dev/vda), the deployment case of
# a disk image on a real device: `ubdkit add file file=/dev/vda direct=true`
# against `losetup --direct-io=on /dev/vda`, fio io_uring direct on both.
# ubdkit runs twice where the kernel offers zero copy (UBLK_F_AUTO_BUF_REG):
# with it (the default) and with --no-zero-copy (the copy path).  The
# workloads take turns device by device, BENCH_ROUNDS times (default 3),
# and the tables give medians.  Software emulation makes absolute numbers
# meaningless: only ratios within one boot are.
#
# Usage: bench/ublk-bench.sh [RUNTIME_SECONDS]   (default 5)
#   BENCH_KERNELS="6.12 newest" (default): UBDKIT_VM_KERNEL values.
#   BENCH_BATCH=1: also `--batch-io` (zero copy), where the kernel offers it.
#   BENCH_BASELINE=PATH: also an earlier ubdkit binary, with its defaults
#     (the "base" column: what a change is measured against, same boot).
# Output: Markdown tables on stdout and in bench/results/ublk-kernels-DATE.md.
# (Runs before 2026-12-02, bench/results/ublk-2026-11-23*.md, came from an
# earlier version: one kernel, a tmpfs or ext4 backing file, polling.)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-5}
rounds=${BENCH_ROUNDS:-3}
kernels=${BENCH_KERNELS:-6.12 newest}
export UBDKIT=${UBDKIT:-$top/ubdkit}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/inner.sh" <<EOS
set -e
echo "KERNEL \$(uname -r)"
run () { # NAME DEV fio-args...
  n=\$1; d=\$2; shift 2
  fio --name=\$n --filename=\$d --ioengine=io_uring --direct=1 --time_based \
      --runtime=$runtime --size=512M --group_reporting --minimal "\$@" |
    awk -F';' -v n="\$n" '{ printf "RESULT %s %d %d %d %d\n", n, \$8, \$49, \$7, \$48 }'
}
workloads () { # DEV NAME
  run \$2:randread4k    \$1 --rw=randread  --bs=4k   --iodepth=32
  run \$2:randwrite4k   \$1 --rw=randwrite --bs=4k   --iodepth=32
  run \$2:randread128k  \$1 --rw=randread  --bs=128k --iodepth=16
  run \$2:randwrite128k \$1 --rw=randwrite --bs=128k --iodepth=16
  run \$2:seqread1m     \$1 --rw=read      --bs=1M   --iodepth=16
  run \$2:seqwrite1m    \$1 --rw=write     --bs=1M   --iodepth=16
}
ublk_with () { # BINARY NAME ADD-OPTIONS...
  u=\$1; n=\$2; shift 2
  dev=\$(\$u add "\$@" -q 2 -d 64 --max-io 1M file file=/dev/vda direct=true 2>/dev/null)
  workloads \$dev \$n
  \$u del --all
}
ublk () { ublk_with \$UBDKIT "\$@"; }
dd if=/dev/urandom of=/dev/vda bs=1M count=512 oflag=direct 2>/dev/null
zc=no
\$UBDKIT features | grep -qw AUTO_BUF_REG && zc=yes
batch=no
[ "${BENCH_BATCH:-0}" = 1 ] && \$UBDKIT features | grep -qw BATCH_IO && batch=yes
for r in \$(seq $rounds); do
  [ \$zc = yes ] && ublk zc
  [ \$batch = yes ] && ublk batch --batch-io
  ublk copy --no-zero-copy
  [ -x /baseline/ubdkit ] && ublk_with /baseline/ubdkit base
  loopdev=\$(/usr/sbin/losetup --direct-io=on -f --show /dev/vda)
  workloads \$loopdev loop
  /usr/sbin/losetup -d \$loopdev
done
EOS

mkdir -p "$top/bench/results"
out="$top/bench/results/ublk-kernels-$(date -u +%F).md"
n=2
while [ -e "$out" ]; do   # never overwrite an earlier run of the day
  out="$top/bench/results/ublk-kernels-$(date -u +%F)-$n.md"
  n=$((n + 1))
done

for k in $kernels; do
  truncate -s 0 "$tmp/disk.img"
  truncate -s 640M "$tmp/disk.img"
  UBDKIT_VM_KERNEL=$k "$top/tests/vm/vm-run" --timeout 2400 --mem 2048 \
    --carry fio ${BENCH_BASELINE:+--carry "$BENCH_BASELINE=/baseline/ubdkit"} \
    --disk "$tmp/disk.img" "$tmp/inner.sh" \
    > "$tmp/console-$k.log" 2>&1 || { tail -40 "$tmp/console-$k.log"; exit 1; }
done

{
  echo "# ublk (copy and zero copy) vs loop on each kernel (qemu TCG, 2 vCPUs, raw virtio disk)"
  echo
  echo "date $(date -u '+%F %H:%M') UTC; host $(uname -r), $(nproc) CPUs;" \
       "ubdkit $(git -C "$top" describe --always --dirty); fio runtime ${runtime} s," \
       "$rounds rounds taking turns, medians; ubdkit add -q 2 -d 64 --max-io 1M" \
       "file file=/dev/vda direct=true (zc: the default, zero copy; batch:" \
       "--batch-io, zero copy; copy: --no-zero-copy); loop: losetup --direct-io=on /dev/vda"
  for k in $kernels; do
    echo
    echo "## $(sed -n 's/^KERNEL //p' "$tmp/console-$k.log" | tr -d '\r' | head -1)"
    echo
    echo "| workload | zc IOPS | batch IOPS | copy IOPS | base IOPS | loop IOPS | zc MiB/s | copy MiB/s | loop MiB/s | zc/loop | batch/loop | copy/loop | base/loop |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    tr -d '\r' < "$tmp/console-$k.log" | grep '^RESULT' | awk '
      function median(key,    n, i, j, t, v) {
        n = cnt[key]; if (!n) return 0
        for (i = 1; i <= n; i++) v[i] = val[key, i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
          if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }
      { split($2, a, ":"); k = a[1] SUBSEP a[2]
        cnt[k]++; val[k, cnt[k]] = $3 + $4
        kb = "bw" SUBSEP k; cnt[kb]++; val[kb, cnt[kb]] = ($5 + $6) / 1024 }
      END {
        n = split("randread4k randwrite4k randread128k randwrite128k seqread1m seqwrite1m", order, " ")
        for (i = 1; i <= n; i++) { w = order[i]
          z = median("zc" SUBSEP w); c = median("copy" SUBSEP w); l = median("loop" SUBSEP w)
          bt = median("batch" SUBSEP w); ba = median("base" SUBSEP w)
          zb = median("bw" SUBSEP "zc" SUBSEP w); cb = median("bw" SUBSEP "copy" SUBSEP w)
          lb = median("bw" SUBSEP "loop" SUBSEP w)
          if (z) zs = sprintf("%d", z); else zs = "-"
          if (z) zbs = sprintf("%.1f", zb); else zbs = "-"
          if (z && l) zr = sprintf("%.2f", z / l); else zr = "-"
          if (bt) bs = sprintf("%d", bt); else bs = "-"
          if (bt && l) br = sprintf("%.2f", bt / l); else br = "-"
          if (ba) bas = sprintf("%d", ba); else bas = "-"
          if (ba && l) bar = sprintf("%.2f", ba / l); else bar = "-"
          printf "| %s | %s | %s | %d | %s | %d | %s | %.1f | %.1f | %s | %s | %.2f | %s |\n", w, zs, bs,
            c, bas, l, zbs, cb, lb, zr, br, l ? c / l : 0, bar } }'
  done
} | tee "$out"
