# Shared helpers for ubdkit's shell tests.  Source it first:
#   source "${srcdir:-.}/functions.sh"
# Tests exit 0 (pass), 1 (fail) or 77 (skip, with the reason printed).
# Environment (set by AM_TESTS_ENVIRONMENT): UBDKIT = path of the built
# daemon, srcdir = this directory, builddir = the build's tests/ directory.
set -e
set -u

: "${UBDKIT:=../ubdkit}"
: "${srcdir:=.}"
export UBDKIT

# Python with libnbd's bindings: Debian's, not whatever python3 is on $PATH.
PYTHON=/usr/bin/python3
export PYTHON
# nbdsh runs "python3" from $PATH: make that Debian's too.
PATH=/usr/bin:$PATH
export PATH

_cleanup_fns=()
cleanup_fn () { _cleanup_fns+=("$*"); }
_run_cleanups () {
  local status=$? i
  set +e
  for (( i=${#_cleanup_fns[@]}-1; i>=0; i-- )); do
    eval "${_cleanup_fns[$i]}"
  done
  exit $status
}
trap _run_cleanups EXIT INT TERM

skip () { echo "$0: SKIP: $*"; exit 77; }
fail () { echo "$0: FAIL: $*" >&2; exit 1; }

# skip_if_sanitized: for tests of memory locking and forward progress under
# memory pressure.  ASan intercepts mlock and mlockall and does nothing (it
# could not lock its terabytes of shadow), so a sanitized daemon runs with
# nothing locked and these properties do not hold by construction.
skip_if_sanitized () {
  [ "${UBDKIT_SANITIZED:-no}" = no ] || skip "sanitizer builds cannot lock memory (ASan makes mlockall a no-op)"
}

# requires CMD [ARGS]: skip the test unless the command runs successfully.
requires () {
  "$@" >/dev/null 2>&1 || skip "requires: '$*' failed"
}
requires_prog () {
  command -v "$1" >/dev/null 2>&1 || skip "'$1' is not installed"
}
requires_root () {
  [ "$(id -u)" = 0 ] || skip "needs root"
}

# A private scratch directory removed at exit.
make_tmpdir () {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ubdkit-test.XXXXXX")
  cleanup_fn "rm -rf '$tmp'"
}

# start_server SOCKVAR PIDVAR [ubdkit serve args...]: start ubdkit serve on a
# private Unix socket in the background and wait until it accepts.
start_server () {
  # Locals are prefixed so the caller may name its variables sock and pid.
  local _ss_sockvar=$1 _ss_pidvar=$2 _ss_sock _ss_pid _ss_i
  shift 2
  [ -n "${tmp:-}" ] || make_tmpdir
  # A name no earlier server holds: $RANDOM repeated itself once (two
  # servers on one path, the second taking it over), mktemp's names come
  # from the kernel's randomness.
  while :; do
    _ss_sock=$(mktemp -u "$tmp/sock.XXXXXXXX")
    [ -e "$_ss_sock" ] || break
  done
  # --log=stderr: the info lines too, for the test's log.
  "$UBDKIT" serve --log=stderr -U "$_ss_sock" "$@" &
  _ss_pid=$!
  cleanup_fn "kill $_ss_pid 2>/dev/null; wait $_ss_pid 2>/dev/null"
  for (( _ss_i=0; _ss_i<200; _ss_i++ )); do
    [ -S "$_ss_sock" ] && break
    kill -0 $_ss_pid 2>/dev/null || fail "ubdkit serve exited early"
    sleep 0.05
  done
  [ -S "$_ss_sock" ] || fail "ubdkit serve did not create $_ss_sock"
  printf -v "$_ss_sockvar" '%s' "$_ss_sock"
  printf -v "$_ss_pidvar" '%s' "$_ss_pid"
}

# free_tcp_port: print a TCP port on 127.0.0.1 that is free right now.
free_tcp_port () {
  "$PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_pid_gone PID [TENTHS]: wait (default 10s) for a process that is not
# our child to disappear; fails if it is still there.
wait_pid_gone () {
  local i
  for (( i=0; i<${2:-100}; i++ )); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# nbdsh runs "python3 -mnbd" from $PATH, which may lack the nbd module; use
# $NBDSH (unquoted, it is two words) instead, also inside --run commands.
NBDSH="$PYTHON -mnbd"
export NBDSH
