#!/usr/bin/env bash
# What filters see of the client, served by ubdkit and by nbdkit with the
# same command line: filters' list_exports and default_export through the
# chain (NBD_OPT_LIST and the name "" stands for, with the exportname
# filter over a native backend and over an nbdkit plugin), TLS (the
# tls-fallback filter, and tests/nbdkit-tls-filter.c reporting open's,
# list_exports' and default_export's is_tls and what nbdkit_is_tls()
# answers in open and pread), a plugin's nbdkit_is_tls and
# nbdkit_export_name under a filter, and the client's socket in a
# filter's preconnect (the ip filter).
source "${srcdir:-.}/functions.sh"
requires_prog nbdkit
requires_prog nbdinfo
requires_prog nbdcopy
requires_prog psktool
filterdir=$(pkg-config --variable=filterdir nbdkit 2>/dev/null) ||
  skip "pkg-config cannot find nbdkit's filterdir"
for f in exportname tls-fallback ip nofilter; do
  [ -f "$filterdir/nbdkit-$f-filter.so" ] || skip "no nbdkit $f filter in $filterdir"
done
"$UBDKIT" serve --help | grep -q -- '--filter' || skip "ubdkit built without the nbdkit host"
requires $NBDSH -c 'assert h.supports_tls()'
tlsfilter=$(cd "${builddir:-.}" && pwd)/nbdkit-tls-filter.so
[ -f "$tlsfilter" ] || fail "$tlsfilter was not built (make check builds it)"
make_tmpdir
export tmp
psktool -u alice -p "$tmp/keys.psk" >/dev/null

# What a client sees, on stdout: the list (name, description), then for
# "" and each of $names: the canonical name, description, size and first
# bytes, or "refused"; over plaintext and, with tls=1, over TLS (alice).
cat > "$tmp/client.py" <<'PY'
import nbd, os
sock = os.environ["unixsocket"]
def uri(tls, name=""):
    if tls:
        return "nbds+unix://alice@/%s?socket=%s&tls-psk-file=%s" % (
            name, sock, os.environ["tmp"] + "/keys.psk")
    return "nbd+unix:///%s?socket=%s" % (name, sock)
def connect(u, listing=False):
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)
    h.set_full_info(True)
    h.set_opt_mode(listing)
    h.connect_uri(u)
    return h
def ask(f):
    try:
        return f()
    except nbd.Error:
        return None
def show(tls):
    print("tls" if tls else "plain")
    h = connect(uri(tls), listing=True)
    h.opt_list(lambda name, desc: print(" list %r %r" % (name, desc)) or 0)
    h.opt_abort()
    for name in [""] + os.environ.get("names", "").split():
        try:
            h = connect(uri(tls, name))
        except nbd.Error:
            print(" %r: refused" % name)
            continue
        size = h.get_size()
        print(" %r: name %r description %r size %d: %r" % (
            name, ask(h.get_canonical_export_name),
            ask(h.get_export_description), size,
            bytes(h.pread(min(64, size), 0))))
        h.shutdown()
show(False)
if os.environ.get("tls") == "1":
    show(True)
PY

# both ARGS...: the client against `ubdkit serve ARGS` and `nbdkit ARGS`,
# where ARGS has the word BACKEND for $ub and $nb; the outputs must match.
both () {
  local u=() n=() what="$*"
  for a in "$@"; do
    if [ "$a" = BACKEND ]; then u+=("$ub"); n+=("$nb"); else u+=("$a"); n+=("$a"); fi
  done
  "$UBDKIT" serve -U - "${tlsopts[@]}" "${u[@]}" \
      --run 'unixsocket="$unixsocket" "$PYTHON" "$tmp/client.py"' > "$tmp/u.out" 2>"$tmp/u.err" ||
    fail "ubdkit serve $what ($ub): $(cat "$tmp/u.err")"
  nbdkit -U - "${tlsopts[@]}" "${n[@]}" \
      --run 'unixsocket="$unixsocket" "$PYTHON" "$tmp/client.py"' > "$tmp/n.out" 2>"$tmp/n.err" ||
    fail "nbdkit $what ($nb): $(cat "$tmp/n.err")"
  diff -u "$tmp/n.out" "$tmp/u.out" ||
    fail "$what ($ub): ubdkit differs from nbdkit (- nbdkit, + ubdkit)"
  echo "$0: $what ($ub): same"
}
# over_both ARGS...: both, over ubdkit's native memory backend and over
# nbdkit's memory plugin (nbdkit:memory), against nbdkit's memory plugin.
over_both () {
  ub=memory nb=memory both "$@"
  ub=nbdkit:memory nb=memory both "$@"
}
export tls=0 names=
tlsopts=()

# The exportname filter: the chain's list and default export.
names="a b c" over_both --filter=exportname BACKEND size=1M exportname=a \
    exportname=b default-export=a exportdesc=fixed:hello \
    exportname-list=explicit
names="a x" over_both --filter=exportname BACKEND size=1M default-export=x
names="x" over_both --filter=exportname BACKEND size=1M default-export=x \
    exportname-list=defaultonly
names="a c" over_both --filter=exportname BACKEND size=1M exportname=a \
    exportname-strict=true exportname-list=empty
# Two filters: the outer one's default export, the inner one's list.
names="a" over_both --filter=nofilter --filter=exportname BACKEND size=1M \
    exportname=a exportname=b default-export=b
# A plain chain still serves the export it is asked for as before.
names="" ub=memory nb=memory both --filter=nofilter BACKEND size=1M

# TLS: plaintext and TLS clients of one server.
export tls=1
tlsopts=(--tls=on "--tls-psk=$tmp/keys.psk")
printf 'use TLS\n' > "$tmp/readme"
names="a" over_both --filter=tls-fallback --filter=exportname BACKEND size=1M \
    tlsreadme="use TLS" exportname=a default-export=a
names="" over_both --filter="$tlsfilter" BACKEND size=1M
grep -qx "tls" "$tmp/u.out" || fail "no TLS client ran"
for want in " list 'list 0' ''" " list 'list 1' ''" \
            " '': name 'default 0' .*open 0 0 pread 0" \
            " '': name 'default 1' .*open 1 1 pread 1"; do
  grep -q "^$want" "$tmp/u.out" ||
    fail "the TLS filter did not see '$want': $(cat "$tmp/u.out")"
done

# A plugin under a filter: nbdkit_is_tls and nbdkit_export_name in its open
# (the eval plugin's open gets readonly, the export name and TLS), as the
# first bytes of its disk.
names="" ub=nbdkit:eval nb=eval both --filter=exportname BACKEND \
    default-export=dflt open='echo "$3 tls=$4"' get_size='echo 512' \
    pread='printf "%-512s" "$2" | head -c $3'
grep -q "dflt tls=true" "$tmp/u.out" && grep -q "dflt tls=false" "$tmp/u.out" ||
  fail "the plugin under a filter: $(cat "$tmp/u.out")"

# The ip filter asks the client's socket in its preconnect: the client's
# uid is allowed, or denied.
export tls=0
tlsopts=()
me=$(id -u)
names="" over_both --filter=ip BACKEND size=1M allow=uid:$me deny=all
grep -q "size 1048576" "$tmp/u.out" || fail "ip: allow=uid:$me refused the client"
if "$UBDKIT" serve -U - --filter=ip memory size=1M deny=uid:$me \
     --run 'nbdinfo --size "$uri"' >/dev/null 2>"$tmp/u.err"; then
  fail "ip: deny=uid:$me let the client in"
fi
