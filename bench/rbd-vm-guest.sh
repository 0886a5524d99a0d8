# bench/rbd-vm-guest.sh: the guest's half of bench/rbd-vm-bench.sh (run by
# tests/vm/vm-run inside the guest; not on its own).  One image each, the
# same cluster: ubdkit's ublk device, ubdkit serve behind the kernel's NBD
# client, rbd-nbd and qemu-nbd (its rbd driver, -c) through the kernel's
# NBD client; each device written once over its whole size (not
# measured), then workload by workload, round by round, the servers take
# turns under fio.  Per run: fio's JSON and the server's CPU ticks (utime +
# stime of its process, every thread, librbd's included) before and after,
# in /tmp/bench, which goes to /dev/vda as a tar.
. "$VMLIB"
conf=/etc/ceph/vm.conf
out=/tmp/bench
mkdir -p $out
: "${SERVERS:=ublk ubdkit-nbd rbd-nbd qemu-nbd}"
: "${WORKLOADS:=rr4k-qd32 rw4k-qd32 sr1m-qd8 sw1m-qd8}"
: "${ROUNDS:=3}" "${RUNTIME:=8}"

note () { echo "$*"; echo "$*" >> $out/notes; }
ticks () { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo -; }
# var NAME: NAME with _ for -, for a shell variable's name.
var () { echo "$1" | tr - _; }
# args WORKLOAD: its fio options (bench/lib.sh's workload_args, passed by
# the host as ARGS_<workload with _ for ->).
args () { eval "echo \"\$ARGS_$(var "$1")\""; }
wait_size () {
  for _i in $(seq 100); do
    [ "$(blockdev --getsize64 "$1" 2>/dev/null || echo 0)" -gt 0 ] && return 0
    sleep 0.1
  done
  return 1
}

# declare_dev SERVER DEV PID / dev_pid SERVER: a server's device and pid,
# kept in dev_<name> and pid_<name> (the name with _ for -), and read
# back into d and p.
declare_dev () { eval "dev_$(var "$1")=$2 pid_$(var "$1")=$3"; note "server $1 $2 pid $3"; }
dev_pid () { eval "d=\$dev_$(var "$1") p=\$pid_$(var "$1")"; }
up () {
  case $1 in
    ublk)
      d=$("$UBDKIT" add rbd pool=rbd image=b-ublk conf=$conf) || return 1
      declare_dev ublk "$d" "$(server_pid "$d")" ;;
    ubdkit-nbd)
      "$UBDKIT" serve -U /tmp/unbd.sock rbd pool=rbd image=b-ubdkit-nbd conf=$conf \
        > /tmp/unbd.log 2>&1 &
      p=$!
      for _i in $(seq 100); do [ -S /tmp/unbd.sock ] && break; sleep 0.1; done
      nbd-client -unix -N '' -b 4096 /tmp/unbd.sock /dev/nbd1 > /tmp/unbd-client.log 2>&1 ||
        { cat /tmp/unbd.log /tmp/unbd-client.log; return 1; }
      wait_size /dev/nbd1 || return 1
      declare_dev ubdkit-nbd /dev/nbd1 $p ;;
    rbd-nbd)
      d=$(rbd-nbd map --conf $conf --device /dev/nbd0 rbd/b-rbd-nbd 2>/tmp/rbd-nbd.err) ||
        { cat /tmp/rbd-nbd.err; return 1; }
      wait_size "$d" || return 1
      declare_dev rbd-nbd "$d" "$(pidof rbd-nbd)" ;;
    qemu-nbd)
      mkdir -p /var/lock  # its lock socket, /var/lock/qemu-nbd-nbd2
      qemu-nbd -c /dev/nbd2 --cache=writeback \
        --image-opts "driver=rbd,pool=rbd,image=b-qemu-nbd,conf=$conf" 2>/tmp/qemu-nbd.err ||
        { cat /tmp/qemu-nbd.err; return 1; }
      wait_size /dev/nbd2 || return 1
      declare_dev qemu-nbd /dev/nbd2 "$(pidof qemu-nbd)" ;;
  esac
}

live=
for s in $SERVERS; do
  if up $s; then live="$live $s"; else note "FAILED to start $s"; fi
done
for s in $live; do
  dev_pid $s
  size=$(blockdev --getsize64 $d)
  t0=$(uptime_s)
  dd if=/dev/zero of=$d bs=1M count=$((size >> 20)) oflag=direct 2>/dev/null ||
    note "prefill of $s failed"
  note "prefill $s $d: $size bytes in $(since $t0) s"
done
# rotate N WORD...: the words from the Nth on (0-based), then the others.
rotate () {
  _n=$1; shift; _i=0; _a=; _b=
  for _x; do
    if [ $_i -lt $_n ]; then _b="$_b $_x"; else _a="$_a $_x"; fi
    _i=$((_i + 1))
  done
  echo $_a $_b
}
nlive=$(echo $live | wc -w)
[ "$nlive" -gt 0 ] || fail "no server started"
for w in $WORKLOADS; do
  for r in $(seq "$ROUNDS"); do
    # The servers take turns, starting one further along each round.
    order=$(rotate $(( (r - 1) % nlive )) $live)
    for s in $order; do
      dev_pid $s
      c0=$(ticks $p); s0=$(head -n 1 /proc/stat)
      # shellcheck disable=SC2046
      fio --name=b --filename=$d --direct=1 --ioengine=libaio $(args $w) \
        --runtime=$RUNTIME --time_based --output-format=json \
        > $out/$s.$w.$r.json 2>$out/$s.$w.$r.err || note "fio failed: $s $w $r"
      c1=$(ticks $p); s1=$(head -n 1 /proc/stat)
      echo "$s $w $r $c0 $c1 $s0 $s1" >> $out/ticks
      echo "  $s $w round $r: $(grep -o '"iops" : [0-9.]*' $out/$s.$w.$r.json | head -2 | tr '\n' ' ')"
    done
  done
done
for s in $live; do
  dev_pid $s
  kill -0 $p 2>/dev/null || note "server $s (pid $p) died"
  echo "$s $(grep -E '^(VmRSS|VmLck|Threads)' /proc/$p/status 2>/dev/null | tr -s ' \t' ' ' | tr '\n' ' ')" >> $out/status
done
nbd-client -d /dev/nbd1 >/dev/null 2>&1 || true
rbd-nbd unmap /dev/nbd0 >/dev/null 2>&1 || true
qemu-nbd -d /dev/nbd2 >/dev/null 2>&1 || true
tar -cf /dev/vda -C $out . || fail "cannot write the results to /dev/vda"
ok "bench: $(wc -l < $out/ticks) fio runs"
