#!/usr/bin/env bash
# --allow / --deny: a client an --allow matches gets the NBD greeting; a
# refused one gets a closed socket and not a byte, and the log one line
# naming it and the rule; other clients still work afterwards.  TCP (IPv4,
# CIDR, IPv6 if there is ::1) and Unix sockets (uid:, gid: by SO_PEERCRED).
source "${srcdir:-.}/functions.sh"
requires_root
requires_prog nbdinfo
requires_prog setpriv
make_tmpdir
chmod 755 "$tmp"                # the Unix tests connect as nobody too
export tmp

# client.py tcp ADDR PORT SOURCE | unix PATH: print how many bytes the
# server sent in 5 s (or until it closed) and "magic" if they began with
# the NBD greeting.
cat > "$tmp/client.py" <<'PY'
import socket, sys
if sys.argv[1] == "tcp":
    fam = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((sys.argv[4], 0))
    s.connect((sys.argv[2], int(sys.argv[3])))
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[2])
s.settimeout(5)
got = b""
try:
    while len(got) < 8:
        b = s.recv(8 - len(got))
        if not b:
            break
        got += b
except (socket.timeout, ConnectionResetError):
    pass
print(len(got), "magic" if got == b"NBDMAGIC" else "none")
PY
# --run commands run under /bin/sh: a script, not a shell function.
printf '#!/bin/sh\nexec %s %s "$@"\n' "$PYTHON" "$tmp/client.py" > "$tmp/client"
chmod 755 "$tmp/client"

# expect_refusals LOG N PATTERN: exactly N refusal lines, matching PATTERN.
expect_refusals () {
  local n
  n=$(grep -c 'refused client' "$1" || true)
  [ "$n" -eq "$2" ] || fail "$1: $n refusal lines, expected $2: $(cat "$1")"
  [ "$2" -eq 0 ] || grep 'refused client' "$1" | grep -q -- "$3" ||
    fail "$1: refusal line does not match '$3': $(cat "$1")"
}

# 1. IPv4 hosts: 127.0.0.2 and 127.0.0.1 allowed, the rest denied.
$UBDKIT serve --bind 127.0.0.1 -p 0 --allow 127.0.0.2 --allow 127.0.0.1 \
    --deny all --run '
  $tmp/client tcp 127.0.0.1 $port 127.0.0.2 > "$tmp/good" &&
  $tmp/client tcp 127.0.0.1 $port 127.0.0.3 > "$tmp/bad" &&
  nbdinfo --size "$uri" > "$tmp/size"' memory size=1M 2> "$tmp/log1" ||
  fail "serve with --allow/--deny over TCP failed: $(cat "$tmp/log1")"
[ "$(cat "$tmp/good")" = "8 magic" ] ||
  fail "allowed client 127.0.0.2 did not get the greeting: $(cat "$tmp/good")"
[ "$(cat "$tmp/bad")" = "0 none" ] ||
  fail "refused client 127.0.0.3 got bytes: $(cat "$tmp/bad")"
[ "$(cat "$tmp/size")" = 1048576 ] || fail "nbdinfo after a refusal failed"
expect_refusals "$tmp/log1" 1 '127\.0\.0\.3.*--deny all'

# 2. CIDR: --allow 127.0.0.0/30 alone (no --deny): .3 in, .4 out.
$UBDKIT serve --bind 127.0.0.1 -p 0 --allow 127.0.0.0/30 --run '
  $tmp/client tcp 127.0.0.1 $port 127.0.0.3 > "$tmp/good" &&
  $tmp/client tcp 127.0.0.1 $port 127.0.0.4 > "$tmp/bad"' memory size=1M \
    2> "$tmp/log2" || fail "serve --allow CIDR failed: $(cat "$tmp/log2")"
[ "$(cat "$tmp/good")" = "8 magic" ] || fail "127.0.0.3 not in 127.0.0.0/30"
[ "$(cat "$tmp/bad")" = "0 none" ] || fail "127.0.0.4 in 127.0.0.0/30"
expect_refusals "$tmp/log2" 1 '127\.0\.0\.4.*matches no --allow'

# 3. IPv6, if this host has ::1.
if "$PYTHON" -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null; then
  $UBDKIT serve --bind ::1 -p 0 --allow ::1/128 --deny all --run '
    $tmp/client tcp ::1 $port ::1 > "$tmp/good"' memory size=1M 2> "$tmp/log3" ||
    fail "serve --allow ::1/128 failed: $(cat "$tmp/log3")"
  [ "$(cat "$tmp/good")" = "8 magic" ] || fail "::1 not allowed by ::1/128"
  expect_refusals "$tmp/log3" 0 ''
  $UBDKIT serve --bind ::1 -p 0 --deny fe80::/10 --deny ::1 --run '
    $tmp/client tcp ::1 $port ::1 > "$tmp/bad"' memory size=1M 2> "$tmp/log3" ||
    fail "serve --deny ::1 failed: $(cat "$tmp/log3")"
  [ "$(cat "$tmp/bad")" = "0 none" ] || fail "::1 not refused by --deny ::1"
  expect_refusals "$tmp/log3" 1 '::1.*--deny ::1'
else
  echo "$0: no ::1 on this host: IPv6 part not run"
fi

# 4. Unix socket: --allow uid:0 --deny all; root in, nobody out.  The
# socket is made connectable by anyone (--unix-mode 0777), so the refusal
# comes from the rule, not from file permissions.
asnobody="setpriv --reuid=65534 --regid=65534 --clear-groups"
export asnobody
$UBDKIT serve -U "$tmp/sock" --unix-mode 0777 --allow uid:0 --deny all \
    --run '
  $tmp/client unix "$unixsocket" > "$tmp/good" &&
  $asnobody $tmp/client unix "$unixsocket" > "$tmp/bad" &&
  nbdinfo --size "$uri" > "$tmp/size"' memory size=1M 2> "$tmp/log4" ||
  fail "serve -U with --allow uid:0 failed: $(cat "$tmp/log4")"
[ "$(cat "$tmp/good")" = "8 magic" ] || fail "root refused by --allow uid:0"
[ "$(cat "$tmp/bad")" = "0 none" ] || fail "nobody not refused: $(cat "$tmp/bad")"
[ "$(cat "$tmp/size")" = 1048576 ] || fail "nbdinfo after a Unix refusal failed"
expect_refusals "$tmp/log4" 1 'uid 65534 gid 65534.*--deny all'

# 5. --deny gid:65534 alone: nobody's primary group out, root in.
$UBDKIT serve -U "$tmp/sock" --unix-mode 0777 --deny gid:65534 --run '
  $tmp/client unix "$unixsocket" > "$tmp/good" &&
  $asnobody $tmp/client unix "$unixsocket" > "$tmp/bad"' \
    memory size=1M 2> "$tmp/log5" ||
  fail "serve -U --deny gid failed: $(cat "$tmp/log5")"
[ "$(cat "$tmp/good")" = "8 magic" ] || fail "root refused by --deny gid:65534"
[ "$(cat "$tmp/bad")" = "0 none" ] || fail "gid 65534 not refused"
expect_refusals "$tmp/log5" 1 'gid 65534.*--deny gid:65534'

# Bad specs are usage errors.
for spec in 10.0.0.0/33 ::/129 nonsense uid:no-such-user-xyz gid:; do
  status=0
  $UBDKIT serve -U - --allow "$spec" memory size=1M 2> "$tmp/err" || status=$?
  [ $status -eq 2 ] || fail "--allow $spec: exit status $status, expected 2"
  [ "$(wc -l < "$tmp/err")" -eq 1 ] || fail "--allow $spec: $(cat "$tmp/err")"
done
