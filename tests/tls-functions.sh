# Helpers of the TLS tests (test-nbd-tls*.sh, bench/tls-bench.sh).  Source
# after functions.sh:
#   source "${srcdir:-.}/functions.sh"; source "$srcdir/tls-functions.sh"
#
# SERVER=ubdkit (the default) or SERVER=nbdkit: which server the tests start.
# nbdkit takes the same --tls options (all but --tls-allow-dn,
# --tls-priority, --tls-ktls), and SERVER=nbdkit is how the tests were
# checked before ubdkit had TLS: what only ubdkit says (its -v lines) is
# checked for ubdkit only (tls_ubdkit true).
source "${srcdir:-.}/tls-setup.sh"

: "${SERVER:=ubdkit}"
case $SERVER in
  ubdkit)
    # The one line a failed handshake logs.
    HS_FAILED='TLS handshake failed' ;;
  nbdkit)
    requires_prog nbdkit
    nbdkit --dump-config | grep -qx 'tls=yes' || skip "nbdkit was built without TLS"
    HS_FAILED='gnutls_handshake' ;;
  *) fail "SERVER=$SERVER: expected ubdkit or nbdkit" ;;
esac
export SERVER
tls_ubdkit () { [ "$SERVER" = ubdkit ]; }

# requires_tls: skip unless the server, certtool, psktool and libnbd
# (with TLS) are all there.
requires_tls () {
  requires_prog certtool
  requires_prog psktool
  requires $NBDSH -c 'assert h.supports_tls()'
  if tls_ubdkit; then
    "$UBDKIT" serve --help 2>&1 | grep -q -- '--tls' ||
      skip "this ubdkit has no --tls"
  fi
}

# tls_start NAME unix|tcp [SERVER OPTIONS...]: start $SERVER with -v and
# OPTIONS on a memory disk of 64 MiB, its stderr in $tmp/NAME.log; wait
# until it serves.  Sets pid_NAME, and sock_NAME (unix) or port_NAME (tcp,
# on 127.0.0.1).  TLS_SIZE (default 64M) and TLS_BACKEND (ubdkit's backend
# words, default "memory size=$TLS_SIZE") change the disk; TLS_ENV (an
# array of NAME=VALUE) is the server's extra environment.
tls_start () {
  local name=$1 transport=$2 listen pid i log="$tmp/$1.log" sock port=
  shift 2
  case $transport in
    unix) sock="$tmp/$name.sock"; listen=(-U "$sock") ;;
    tcp)  port=$(free_tcp_port) || fail "no free TCP port"
          if tls_ubdkit; then listen=(--bind 127.0.0.1 -p "$port")
          else listen=(-i 127.0.0.1 -p "$port"); fi ;;
    *) fail "tls_start: $transport: expected unix or tcp" ;;
  esac
  rm -f "$tmp/$name.pid"
  if tls_ubdkit; then
    # shellcheck disable=SC2086
    env ${TLS_ENV[@]+"${TLS_ENV[@]}"} "$UBDKIT" serve -v "${listen[@]}" "$@" ${TLS_BACKEND:-memory size=${TLS_SIZE:-64M}} 2> "$log" &
  else
    env ${TLS_ENV[@]+"${TLS_ENV[@]}"} nbdkit -f -v "${listen[@]}" -P "$tmp/$name.pid" "$@" memory "${TLS_SIZE:-64M}" 2> "$log" &
  fi
  pid=$!
  cleanup_fn "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
  for (( i=0; i<400; i++ )); do
    if tls_ubdkit; then grep -q 'ready:' "$log" && break
    else [ -s "$tmp/$name.pid" ] && break; fi
    kill -0 $pid 2>/dev/null || { cat "$log" >&2; fail "$name: $SERVER exited at start"; }
    sleep 0.05
  done
  kill -0 $pid 2>/dev/null || { cat "$log" >&2; fail "$name: $SERVER exited at start"; }
  printf -v "pid_$name" '%s' "$pid"
  if [ -n "$port" ]; then printf -v "port_$name" '%s' "$port"
  else printf -v "sock_$name" '%s' "$sock"; fi
}

# tls_alive NAME: the server is still running.
tls_alive () {
  local p="pid_$1"
  kill -0 "${!p}" 2>/dev/null || { tail -20 "$tmp/$1.log" >&2; fail "$1: $SERVER died"; }
}

# hs_failures NAME: how many failed handshakes server NAME logged.
hs_failures () { grep -c -- "$HS_FAILED" "$tmp/$1.log" || true; }

# expect_hs_failure NAME BEFORE WHAT: wait (5 s) for server NAME to log a
# failed handshake more than BEFORE; for ubdkit exactly one more.
expect_hs_failure () {
  local name=$1 before=$2 what=$3 i n
  for (( i=0; i<100; i++ )); do
    n=$(hs_failures "$name")
    [ "$n" -gt "$before" ] && break
    sleep 0.05
  done
  [ "$n" -gt "$before" ] ||
    { tail -20 "$tmp/$name.log" >&2; fail "$what: $name logged no '$HS_FAILED'"; }
  if tls_ubdkit; then
    sleep 0.2
    n=$(hs_failures "$name")
    [ "$n" = $((before + 1)) ] ||
      fail "$what: $name logged $((n - before)) '$HS_FAILED' lines, expected one"
  fi
}

# x509_uri NAME CLIENTDIR: libnbd URI of server NAME (unix or tcp) with
# the client certificates CLIENTDIR.  psk_uri NAME USER PSKFILE: with PSK.
x509_uri () {
  local s="sock_$1" p="port_$1"
  if [ -n "${!s:-}" ]; then echo "nbds+unix:///?socket=${!s}&tls-certificates=$2"
  else echo "nbds://localhost:${!p}/?tls-certificates=$2"; fi
}
psk_uri () {
  local s="sock_$1" p="port_$1"
  if [ -n "${!s:-}" ]; then echo "nbds+unix://$2@/?socket=${!s}&tls-psk-file=$3"
  else echo "nbds://$2@localhost:${!p}/?tls-psk-file=$3"; fi
}
# plain_uri NAME: the same server without TLS.
plain_uri () {
  local s="sock_$1" p="port_$1"
  if [ -n "${!s:-}" ]; then echo "nbd+unix:///?socket=${!s}"
  else echo "nbd://localhost:${!p}/"; fi
}

# good_client NAME URI WHAT: nbdinfo --size must answer 64 MiB over URI.
good_client () {
  local got
  got=$(timeout 60 nbdinfo --size "$2" 2>"$tmp/good.err") ||
    { cat "$tmp/good.err" >&2; fail "$3: a good client then failed on $1"; }
  [ "$got" = $(( ${TLS_SIZE_BYTES:-64 << 20} )) ] || fail "$3: size $got on $1"
  tls_alive "$1"
}

# refused NAME URI WHAT: a client that must fail to connect.
refused () {
  if timeout 60 nbdinfo --size "$2" >"$tmp/refused.out" 2>&1; then
    fail "$3: nbdinfo connected to $1: $(cat "$tmp/refused.out")"
  fi
  tls_alive "$1"
}
