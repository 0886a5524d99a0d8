#!/usr/bin/env bash
# A single-node Ceph cluster for the tests, from Debian's packages (ceph-mon,
# ceph-osd, ceph-common): one monitor and one OSD in a scratch directory, no
# manager, no containers, no cephadm, no systemd.  docs/ceph.md has the
# steps and how long they take.
#
#   cluster.sh start DIR [--store memstore|bluestore] [--addr IP]
#       Create DIR (it must not exist), bring the cluster up, make the pool
#       "rbd" (size 1, rbd pool init) and print the environment to use it:
#       CEPH_CONF=DIR/ceph.conf and CEPH_ARGS (the client's own log and
#       admin socket under DIR), one NAME=VALUE a line, for eval.  On
#       failure it prints the daemons' last log lines, tears down what it
#       started and exits 1.
#   cluster.sh stop DIR        kill the daemons and remove DIR
#   cluster.sh kill-osd DIR    SIGKILL the OSD (a crash), wait until it is gone
#   cluster.sh start-osd DIR   start it again, wait until the map says up
#   cluster.sh kill-mon DIR / start-mon DIR: the same for the monitor
#   cluster.sh guest-conf DIR  print a ceph.conf for a client elsewhere (a
#       VM guest): the monitor's address, no auth, the client's log and
#       admin socket (one per process) under /tmp, and a start that gives
#       up in 60 s, not 300
#
# --store memstore (the default) keeps the OSD's objects in its memory, at
# most 1 GiB of them (CLUSTER_MEMSTORE_BYTES=N for more; a full OSD blocks
# every write, it does not fail it): the
# fastest to start, but an OSD restart loses every object, so the restart
# test uses bluestore, on a sparse file in DIR.  --addr binds the daemons to
# another of this machine's addresses than 127.0.0.1 (for a VM guest that
# must reach them); nothing here sends traffic anywhere else.
#
# Auth is off (auth ... required = none): the cluster serves whoever can
# reach its loopback ports, which is why it binds to 127.0.0.1 by default.
# It runs as whoever calls it; the tests run it as root (CI does), but
# nothing here needs root: the daemons write only under DIR.
set -eu

usage () {
  echo "usage: $0 start DIR [--store memstore|bluestore] [--addr IP]" >&2
  echo "       $0 stop|kill-osd|start-osd|kill-mon|start-mon|guest-conf DIR" >&2
  exit 2
}

[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
conf=$dir/ceph.conf

say () { echo "cluster: $*" >&2; }
die () {
  say "$*"
  for f in "$dir"/log/mon.a.log "$dir"/log/osd.0.log "$dir"/log/*.stderr; do
    [ -f "$f" ] && { say "last lines of $f:"; tail -n 15 "$f" >&2; }
  done
  exit 1
}

# A monotonic clock in milliseconds, for the timings.
now_ms () { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }

# ceph CLI against this cluster, never waiting long for an absent monitor.
ceph_cli () { timeout 30 ceph -c "$conf" --connect-timeout 10 "$@"; }

pid_of () { cat "$dir/run/$1.pid" 2>/dev/null || true; }

# wait_gone NAME: wait until the daemon's pid is gone (10 s), then drop its
# pid file.
wait_gone () {
  local pid i
  pid=$(pid_of "$1")
  [ -n "$pid" ] || return 0
  for (( i=0; i<100; i++ )); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && return 1
  rm -f "$dir/run/$1.pid"
}

kill_daemon () {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  wait_gone "$1" || die "$1 (pid $pid) did not die"
}

# up_from: the epoch since which the OSD map says osd.0 is up (empty when
# it is down).  Not the placement groups' states: without a manager nothing
# reports them, and rados/rbd calls wait for peering by themselves.
up_from () {
  ceph_cli osd dump 2>/dev/null |
    awk '$1 == "osd.0" && $2 == "up" { for (i = 3; i < NF; i++) if ($i == "up_from") print $(i + 1) }'
}

# wait_osd_up OLD: wait until osd.0 is up since a later epoch than OLD.  A
# killed OSD still shows up (nothing tells the monitor of a lone OSD's
# death) until its next instance boots and takes over the entry.
wait_osd_up () {
  local i e pid
  for (( i=0; i<300; i++ )); do
    e=$(up_from)
    [ -n "$e" ] && [ "$e" -gt "${1:-0}" ] && return 0
    pid=$(pid_of osd.0)
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || die "the OSD exited"
    sleep 0.1
  done
  die "the OSD is not up after 30 s"
}

start_mon () {
  ceph-mon -c "$conf" -i a 2>>"$dir/log/mon.a.stderr" ||
    die "ceph-mon did not start"
  # ceph-mon forks once its store is open; it answers once it formed its
  # quorum of one.
  local i
  for (( i=0; i<100; i++ )); do
    ceph_cli mon stat >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the monitor does not answer after 10 s"
}

start_osd () {
  local old
  old=$(up_from)
  ceph-osd -c "$conf" -i 0 2>>"$dir/log/osd.0.stderr" ||
    die "ceph-osd did not start"
  wait_osd_up "$old"
}

write_conf () {
  local addr=$1 port=$2 store=$3 fsid=$4
  cat > "$conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:$addr:$port]
public addr = $addr
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
log to stderr = false
mon data = $dir/mon/\$name
osd data = $dir/osd/\$name
osd objectstore = $store
# A test cluster: small memory targets, no scrubbing.
osd memory target = 268435456
osd scrub begin hour = 0
osd scrub end hour = 0
memstore device bytes = ${CLUSTER_MEMSTORE_BYTES:-1073741824}
bluestore block path = $dir/osd/block
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mkfs = false
bluestore cache size = 67108864
EOF
}

# The environment a client (ubdkit, rbd, qemu-img) needs: the conf, and its
# own log and admin socket kept under DIR.
print_env () {
  echo "CEPH_CONF=$conf"
  echo "CEPH_ARGS='--log-file=$dir/log/client.\$pid.log --admin-socket=$dir/run/client.\$pid.asok'"
}

do_start () {
  local store=memstore addr=127.0.0.1 port fsid uuid id t0 t_mon t_osd t_pool
  while [ $# -gt 0 ]; do
    case $1 in
      --store) store=$2; shift 2 ;;
      --addr) addr=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  case $store in memstore|bluestore) ;; *) usage ;; esac
  for p in ceph ceph-mon ceph-osd monmaptool rbd; do
    command -v $p >/dev/null || { say "$p is not installed"; exit 77; }
  done
  [ ! -e "$dir" ] || { say "$dir exists"; exit 1; }
  mkdir -p "$dir"/run "$dir"/log "$dir"/mon/mon.a "$dir"/osd/osd.0
  # On any failure from here: tear down what started.
  trap 'rc=$?; [ $rc = 0 ] || do_stop; exit $rc' EXIT
  t0=$(now_ms)
  port=$(python3 -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1]); s.close()' "$addr")
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$addr" "$port" "$store" "$fsid"

  monmaptool --create --fsid "$fsid" --addv a "[v2:$addr:$port]" \
    "$dir/monmap" >/dev/null || die "monmaptool failed"
  ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" \
    >"$dir/log/mkfs.log" 2>&1 || { cat "$dir/log/mkfs.log" >&2; die "ceph-mon --mkfs failed"; }
  start_mon
  t_mon=$(now_ms)

  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(ceph_cli osd new "$uuid") || die "ceph osd new failed"
  [ "$id" = 0 ] || die "ceph osd new gave id '$id', not 0"
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" \
    >>"$dir/log/mkfs.log" 2>&1 || { tail "$dir/log/mkfs.log" >&2; die "ceph-osd --mkfs failed"; }
  start_osd
  t_osd=$(now_ms)

  ceph_cli osd pool create rbd 8 8 >/dev/null 2>&1 || die "ceph osd pool create failed"
  timeout 60 rbd -c "$conf" pool init rbd || die "rbd pool init failed"
  t_pool=$(now_ms)
  echo "store=$store mon_ms=$((t_mon - t0)) osd_ms=$((t_osd - t_mon)) pool_ms=$((t_pool - t_osd)) total_ms=$((t_pool - t0))" \
    > "$dir/timings"
  say "up in $(( (t_pool - t0) / 1000 )).$(( (t_pool - t0) % 1000 / 100 )) s ($(cat "$dir/timings")), at $addr:$port"
  trap - EXIT
  print_env
}

do_stop () {
  [ -d "$dir" ] || return 0
  for d in osd.0 mon.a; do
    pid=$(pid_of $d)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    wait_gone $d || say "$d (pid $pid) did not die"
  done
  rm -rf "$dir"
}

guest_conf () {
  local monhost
  monhost=$(sed -n 's/^mon host = //p' "$dir/ceph.conf")
  [ -n "$monhost" ] || { say "no cluster in $dir"; exit 1; }
  cat <<EOC
[global]
mon host = $monhost
auth cluster required = none
auth service required = none
auth client required = none
ms bind ipv6 = false
client mount timeout = 60
log file = /tmp/ceph-client.log
log to stderr = false
err to stderr = false
admin socket = /tmp/ceph-client.\$pid.asok
run dir = /tmp
EOC
}

case $cmd in
  start) do_start "$@" ;;
  guest-conf) guest_conf ;;
  stop) do_stop ;;
  kill-osd) kill_daemon osd.0 ;;
  start-osd) start_osd ;;
  kill-mon) kill_daemon mon.a ;;
  start-mon) start_mon ;;
  *) usage ;;
esac
