#!/usr/bin/env bash
# What an nbdkit user relies on beyond the plugin calls, tried side by
# side with how nbdkit behaves (tests/nbdkit-compat-plugin.c, whose disk
# is the text "script=S debug=N export=NAME"):
#  - a bare first argument to a plugin without magic_config_key is
#    script=ARG (a second bare one is still refused);
#  - nbdkit_shutdown in get_ready: a clean exit 0, not SIGTERM's 143;
#  - -D compat.foo.bar=N sets the plugin's compat_debug_foo_bar; a flag
#    it does not have is one clear error at start;
#  - NBD_INFO_NAME for "" is the plugin's default_export answer and
#    NBD_INFO_DESCRIPTION its export_description (nbdinfo --json, the
#    same as nbdkit's);
#  - ubdkit killed by SIGTERM, SIGINT or SIGHUP ends its --run command,
#    with what the command's shell started;
#  - --dump-plugin prints what nbdkit --dump-plugin prints (diffed);
#    nbdkit:PLUGIN --help the plugin's help, --version its version;
#    --dump-config key=value lines;
#  - quiet in the foreground unless -v, --log or the journal asks;
#  - -s: one client on stdin/stdout (libnbd's connect_command), exit
#    when it leaves; --mask-handshake as nbdkit's (nbdinfo's protocol,
#    the flags on the wire, a client asking for a masked flag refused).
source "${srcdir:-.}/functions.sh"
requires $NBDSH -c pass
"$UBDKIT" --help | grep -q 'nbdkit:PLUGIN' || skip "ubdkit built without the nbdkit host"
plugin=$(cd "${builddir:-.}" && pwd)/nbdkit-compat-plugin.so
[ -f "$plugin" ] || fail "$plugin was not built (make check builds it)"
make_tmpdir

# The disk's first word(s), read with nbdsh over ubdkit serve ARGS...
disk_text () {
  "$UBDKIT" serve -U "$tmp/sock" "$@" \
    --run "$NBDSH -u \"\$uri\" -c 'print(h.pread(512, 0).decode().rstrip())'" \
    2>"$tmp/err"
}

# 1. A bare first argument is script=.
got=$(disk_text "nbdkit:$plugin" /some/script.sh) ||
  fail "bare first argument refused: $(cat "$tmp/err")"
[ "$got" = "script=/some/script.sh debug=0 export=" ] ||
  fail "bare first argument: disk says '$got'"
got=$(disk_text "nbdkit:$plugin" default=x /some/script.sh 2>&1) &&
  fail "a bare argument after the first was accepted: $got"
grep -q "expected key=value, got '/some/script.sh'" "$tmp/err" ||
  fail "no clear error for a second bare argument: $(cat "$tmp/err")"

# 2. nbdkit_shutdown from get_ready: exit 0, promptly.
timeout 20 "$UBDKIT" serve -U "$tmp/sock2" "nbdkit:$plugin" shutdown=1 \
  2>"$tmp/err"
rc=$?
[ $rc = 0 ] || fail "nbdkit_shutdown in get_ready: exit $rc, not 0: $(cat "$tmp/err")"
# With --run: ubdkit exits 0 and the command does not hold it up.
timeout 20 "$UBDKIT" serve -U "$tmp/sock2" "nbdkit:$plugin" shutdown=1 \
  --run 'sleep 60' 2>"$tmp/err"
rc=$?
[ $rc = 0 ] || fail "nbdkit_shutdown in get_ready with --run: exit $rc: $(cat "$tmp/err")"
# With --daemonize: the shutdown reaches the daemon, which exits at once
# as it does in the foreground.
"$UBDKIT" serve --daemonize -P "$tmp/pid2" -U "$tmp/sock2" "nbdkit:$plugin" \
  shutdown=1 2>"$tmp/err" || fail "--daemonize with nbdkit_shutdown: $(cat "$tmp/err")"
# (The daemon removes its pidfile as it exits: it may be gone already.)
for i in $(seq 100); do
  pgrep -f "serve --daemonize -P $tmp/pid2" >/dev/null || break
  sleep 0.1
done
pkill -f "serve --daemonize -P $tmp/pid2" &&
  fail "nbdkit_shutdown in get_ready: the daemon kept serving"
[ ! -e "$tmp/pid2" ] || fail "the daemon exited without removing its pidfile"

# 3. -D PLUGIN.FLAG=N (FLAG's '.' is '_' in the variable's name).
got=$(disk_text -D compat.foo.bar=42 "nbdkit:$plugin" script=s) ||
  fail "-D compat.foo.bar=42: $(cat "$tmp/err")"
[ "$got" = "script=s debug=42 export=" ] || fail "-D: disk says '$got'"
got=$(disk_text --debug=compat.foo.bar=-7 -D nbdkit.backend.datapath=0 \
        -D other.flag=1 "nbdkit:$plugin" script=s) ||
  fail "--debug compat.foo.bar=-7: $(cat "$tmp/err")"
[ "$got" = "script=s debug=-7 export=" ] || fail "--debug: disk says '$got'"
disk_text -D compat.nosuch=1 "nbdkit:$plugin" script=s &&
  fail "-D with a flag the plugin lacks was accepted"
grep -q "plugin compat has no debug flag nosuch (no symbol compat_debug_nosuch)" \
    "$tmp/err" || fail "no clear error for a missing flag: $(cat "$tmp/err")"
for bad in compat foo=1 compat.=1 compat.x=y .x=1; do
  "$UBDKIT" serve -U "$tmp/sock" -D "$bad" "nbdkit:$plugin" 2>"$tmp/err" &&
    fail "-D $bad was accepted"
  grep -q "ubdkit: -D '$bad'" "$tmp/err" || fail "-D $bad: $(cat "$tmp/err")"
done

# 4. The canonical name and description, as nbdinfo sees them.
requires nbdinfo --version
name_desc () {
  "$PYTHON" -c 'import json, sys
e = json.load(sys.stdin)["exports"][0]
print(e["export-name"], "|", e.get("description", "(none)"))'
}
for args in "default=dname description=ddesc" "default=dname" "description=d"; do
  got=$("$UBDKIT" serve -U "$tmp/sock" "nbdkit:$plugin" script=s $args \
          --run 'nbdinfo --json "$uri"' 2>"$tmp/err" | name_desc) ||
    fail "nbdinfo over ubdkit ($args): $(cat "$tmp/err")"
  case $args in
    *default=dname*) want_name=dname ;;
    *) want_name= ;;
  esac
  case $args in
    *description=ddesc*) want_desc=ddesc ;;
    *description=d*) want_desc=d ;;
    *) want_desc="(none)" ;;
  esac
  [ "$got" = "$want_name | $want_desc" ] ||
    fail "$args: nbdinfo says '$got', not '$want_name | $want_desc'"
  if command -v nbdkit >/dev/null; then
    ref=$(nbdkit -U - "$plugin" script=s $args --run 'nbdinfo --json "$uri"' |
          name_desc)
    [ "$got" = "$ref" ] || fail "$args: ubdkit '$got', nbdkit '$ref'"
  fi
done
# The plugin's open saw the canonical name too.
got=$(disk_text "nbdkit:$plugin" script=s default=dname) || fail "$(cat "$tmp/err")"
[ "$got" = "script=s debug=0 export=dname" ] || fail "open saw '$got'"
# --description stays the fallback for a plugin without an answer.
got=$("$UBDKIT" serve -U "$tmp/sock" --description fallback "nbdkit:$plugin" \
        script=s --run 'nbdinfo --json "$uri"' 2>"$tmp/err" | name_desc) ||
  fail "--description: $(cat "$tmp/err")"
[ "$got" = " | fallback" ] || fail "--description: nbdinfo says '$got'"

# 5. A signal to ubdkit ends the --run command and its children.
for sig in TERM INT HUP; do
  rm -f "$tmp/gc"
  "$UBDKIT" serve -U "$tmp/sock5" memory size=1M \
    --run "sh -c 'echo \$\$ > $tmp/gc; exec sleep 300'; echo not here" \
    2>"$tmp/err" &
  ub=$!
  for (( i=0; i<100; i++ )); do [ -s "$tmp/gc" ] && break; sleep 0.1; done
  gc=$(cat "$tmp/gc") || fail "SIG$sig: the --run command did not start"
  cleanup_fn "kill $gc 2>/dev/null"
  kill -$sig $ub
  wait $ub
  wait_pid_gone "$gc" 50 || fail "SIG$sig: the --run command's child survived"
done

# 6. Informational modes.
if command -v nbdkit >/dev/null; then
  for p in memory "$plugin"; do
    "$UBDKIT" serve --dump-plugin "nbdkit:$p" >"$tmp/ours" 2>"$tmp/err" ||
      fail "--dump-plugin nbdkit:$p: $(cat "$tmp/err")"
    nbdkit "$p" --dump-plugin >"$tmp/theirs"
    diff -u "$tmp/theirs" "$tmp/ours" || fail "--dump-plugin $p differs from nbdkit's"
  done
  "$UBDKIT" serve "nbdkit:$plugin" --help | sed -n '/^plugin: /,$p' >"$tmp/ours"
  nbdkit "$plugin" --help | sed -n '/^plugin: /,$p' >"$tmp/theirs"
  diff -u "$tmp/theirs" "$tmp/ours" || fail "PLUGIN --help differs from nbdkit's"
fi
grep -qx 'has_export_description=1' <("$UBDKIT" serve --dump-plugin "nbdkit:$plugin") ||
  fail "--dump-plugin: no has_export_description=1"
"$UBDKIT" serve "nbdkit:$plugin" --help | grep -qx 'script=FILE  any text, reported in the disk' ||
  fail "nbdkit:PLUGIN --help does not show the plugin's config_help"
"$UBDKIT" serve --help | grep -q '^plugin: ' && fail "--help without a plugin shows a plugin"
got=$("$UBDKIT" serve --version "nbdkit:$plugin" | sed -n 2p)
[ "$got" = "compat 1.2.3" ] || fail "--version nbdkit:PLUGIN: '$got'"
"$UBDKIT" serve -V | grep -q '^ubdkit ' || fail "serve -V: no version"
[ "$("$UBDKIT" serve -V | wc -l)" = 1 ] || fail "serve -V without a plugin: more than one line"
"$UBDKIT" serve --dump-config >"$tmp/cfg" || fail "--dump-config failed"
grep -qx "plugindir=$(pkg-config --variable=plugindir nbdkit)" "$tmp/cfg" ||
  fail "--dump-config: no plugindir=: $(cat "$tmp/cfg")"
grep -q '^version=' "$tmp/cfg" || fail "--dump-config: no version="
grep -vq '^[a-z_]*=' "$tmp/cfg" && fail "--dump-config: not key=value: $(cat "$tmp/cfg")"
"$UBDKIT" serve --dump-plugin memory size=1M 2>"$tmp/err" &&
  fail "--dump-plugin without an nbdkit plugin succeeded"
grep -q -- '--dump-plugin needs nbdkit:PLUGIN' "$tmp/err" || fail "--dump-plugin: $(cat "$tmp/err")"
"$UBDKIT" serve --dump-plugin nbdkit:/nonexistent.so 2>"$tmp/err" &&
  fail "--dump-plugin of a missing plugin succeeded"
grep -q 'cannot open plugin' "$tmp/err" || fail "--dump-plugin missing: $(cat "$tmp/err")"

# 7. -s and --mask-handshake.
cat > "$tmp/single.py" <<PY
import nbd, subprocess, sys
h = nbd.NBD()
h.connect_command(["$UBDKIT", "serve", "-s", "nbdkit:memory", "size=2M"])
assert h.get_size() == 2 * 1024 * 1024
h.pwrite(b"single client", 4096)
assert h.pread(13, 4096) == b"single client"
h.shutdown()
h2 = nbd.NBD()
h2.connect_command(["$UBDKIT", "serve", "-s", "nbdkit:$plugin", "bare"])
assert h2.pread(11, 0) == b"script=bare", h2.pread(20, 0)
h2.shutdown()
PY
"$PYTHON" "$tmp/single.py" 2>"$tmp/err" || fail "-s with connect_command: $(cat "$tmp/err")"
sleep 0.3
pgrep -f "ubdkit serve -s nbdkit:memory size=2M" && fail "-s: ubdkit did not exit with its client"
got=$($NBDSH -c "h.connect_command(['$UBDKIT', 'serve', '-s', 'memory', 'size=1M']); print(h.get_size())" 2>"$tmp/err") ||
  fail "nbdsh -c connect_command -s: $(cat "$tmp/err")"
[ "$got" = 1048576 ] || fail "-s over nbdsh: size $got"
# Its exit status, and a clear error when stdin is not a socket.
"$PYTHON" - "$UBDKIT" <<'PY' || fail "-s: ubdkit's exit status"
import socket, subprocess, sys
a, b = socket.socketpair()
p = subprocess.Popen([sys.argv[1], "serve", "-s", "memory", "size=1M"],
                     stdin=b, stdout=b, stderr=subprocess.DEVNULL)
b.close()
assert a.recv(18)[:16] == b"NBDMAGICIHAVEOPT"
a.close()
assert p.wait(20) == 0, p.returncode
PY
"$UBDKIT" serve -s memory size=1M </dev/null 2>"$tmp/err" && fail "-s with /dev/null accepted"
grep -q "standard input and output must be one stream socket" "$tmp/err" ||
  fail "-s without a socket: $(cat "$tmp/err")"
"$UBDKIT" serve -s -U "$tmp/s" memory 2>"$tmp/err" && fail "-s with -U accepted"
grep -q -- "-s (the client on standard input/output) does not go with" "$tmp/err" ||
  fail "-s -U: $(cat "$tmp/err")"

proto () { "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["protocol"])'; }
for m in 0 1 2 3; do
  got=$("$UBDKIT" serve -U "$tmp/sock" --mask-handshake $m memory size=1M \
          --run 'nbdinfo --json "$uri"' 2>"$tmp/err" | proto) ||
    fail "--mask-handshake $m: $(cat "$tmp/err")"
  case $m in 0|2) want=newstyle ;; *) want=newstyle-fixed ;; esac
  [ "$got" = "$want" ] || fail "--mask-handshake $m: protocol $got, not $want"
done
"$UBDKIT" serve -U "$tmp/sock" --mask-handshake 1 memory size=1M --run '
  "$PYTHON" -c "
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
hello = s.recv(18)
assert struct.unpack(\">H\", hello[16:18])[0] == 1, hello
s.sendall(struct.pack(\">I\", 3))   # NO_ZEROES was not offered
assert s.recv(1) == b\"\", \"a client asking for a masked flag was served\"
" "$unixsocket"' 2>"$tmp/err" || fail "--mask-handshake 1 on the wire: $(cat "$tmp/err")"
grep -q "client flags 0x3 refused (not offered: 0x1)" "$tmp/err" ||
  fail "--mask-handshake: no line for the refused client: $(cat "$tmp/err")"
"$UBDKIT" serve -U "$tmp/sock" --mask-handshake x memory 2>"$tmp/err" &&
  fail "--mask-handshake x accepted"

# 8. A 64 MiB read and write through an nbdkit plugin, as nbdkit serves them
# (the largest request is 64 MiB, streamed through the slot buffers).
out=$("$UBDKIT" serve -U - --run '/usr/bin/python3 -c "
import nbd, os
h = nbd.NBD()
h.connect_uri(\"$uri\")
buf = os.urandom(64 << 20)
h.pwrite(buf, 4096)
assert h.pread(64 << 20, 4096) == buf
print(\"ok\")
"' nbdkit:memory size=80M 2>"$tmp/err") ||
  fail "64 MiB requests through nbdkit:memory: $out $(cat "$tmp/err")"
[ "$out" = ok ] || fail "64 MiB requests: $out"

# 9. Quiet as nbdkit in the foreground: without -v or --log, stderr has
# warnings and errors only (this machine may add io-flusher/oom warnings);
# -v, --log=stderr, and systemd's journal on stderr (JOURNAL_STREAM naming
# it) show the info lines.
info_lines () { grep -v -e ': warning: ' -e ': error: ' "$1" | grep -c . || true; }
"$UBDKIT" serve -U - --run true nbdkit:memory size=1M 2>"$tmp/q.err" ||
  fail "quiet run: $(cat "$tmp/q.err")"
[ "$(info_lines "$tmp/q.err")" = 0 ] || fail "info lines without -v: $(cat "$tmp/q.err")"
for how in -v --log=stderr; do
  "$UBDKIT" serve $how -U - --run true nbdkit:memory size=1M 2>"$tmp/q.err" ||
    fail "$how: $(cat "$tmp/q.err")"
  grep -q ': ready: ' "$tmp/q.err" || fail "$how: no ready line: $(cat "$tmp/q.err")"
done
: > "$tmp/q.err"
js=$(stat -c '%d:%i' "$tmp/q.err")
JOURNAL_STREAM=$js "$UBDKIT" serve -U - --run true memory size=1M 2>>"$tmp/q.err" ||
  fail "JOURNAL_STREAM: $(cat "$tmp/q.err")"
grep -q ': ready: ' "$tmp/q.err" || fail "stderr is the journal: no info lines: $(cat "$tmp/q.err")"
JOURNAL_STREAM=1:1 "$UBDKIT" serve -U - --run true memory size=1M 2>"$tmp/q.err" ||
  fail "JOURNAL_STREAM elsewhere: $(cat "$tmp/q.err")"
[ "$(info_lines "$tmp/q.err")" = 0 ] || fail "JOURNAL_STREAM naming another file showed info lines: $(cat "$tmp/q.err")"

exit 0
