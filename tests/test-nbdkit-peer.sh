#!/usr/bin/env bash
# nbdkit_peer_* in a hosted nbdkit plugin (tests/nbdkit-peer-plugin.c,
# whose disk is the text of what they said, in preconnect and in open).
# Over a Unix socket: the client's own pid, uid and gid, and AF_UNIX from
# nbdkit_peer_name.  Over TCP: pid, uid and gid fail with ENOTSUP (as in
# nbdkit: only Unix sockets carry credentials), peer_name gives AF_INET.
source "${srcdir:-.}/functions.sh"
requires $NBDSH -c pass
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
plugin=$(cd "${builddir:-.}" && pwd)/nbdkit-peer-plugin.so
[ -f "$plugin" ] || fail "$plugin was not built (make check builds it)"
make_tmpdir
export tmp

cat > "$tmp/client.py" <<'PY'
import errno, nbd, os, socket, sys
h = nbd.NBD()
h.connect_uri(os.environ["uri"])
got = h.pread(512, 0).decode().split()
h.shutdown()
if sys.argv[1] == "unix":
    me = [str(os.getpid()), str(os.getuid()), str(os.getgid()),
          str(int(socket.AF_UNIX))]
else:
    notsup = "-1/%d" % errno.ENOTSUP
    me = [notsup, notsup, notsup, str(int(socket.AF_INET))]
want = ["pre"] + me + ["open"] + me
print(sys.argv[1], " ".join(got))
assert got == want, (got, want)
PY

# As root, the client runs as another user, so uid and gid are not 0.
as_client=
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  as_client="setpriv --reuid=65534 --regid=65534 --clear-groups"
  chmod 711 "$tmp"
  chmod 644 "$tmp/client.py"
fi
export as_client
$UBDKIT serve -U "$tmp/sock" "nbdkit:$plugin" \
    --run 'chmod 666 "$unixsocket" && $as_client "$PYTHON" "$tmp/client.py" unix' \
    2>"$tmp/err" || fail "Unix socket: wrong peer answers: $(cat "$tmp/err")"
$UBDKIT serve -p 0 --bind 127.0.0.1 "nbdkit:$plugin" \
    --run '"$PYTHON" "$tmp/client.py" tcp' 2>"$tmp/err" ||
  fail "TCP: wrong peer answers: $(cat "$tmp/err")"
grep -q 'nbdkit_peer_pid: only available for clients on a Unix domain socket' \
    "$tmp/err" || fail "no message for peer_pid over TCP: $(cat "$tmp/err")"
