#!/usr/bin/env bash
# The bash completion (completion/ubdkit.bash): it loads in bash without a
# word on stderr, and completing commands, options, option values, backend
# names and parameters, and ublk device ids (from `ubdkit list --json`,
# faked by a stub ubdkit: this host has no ublk devices) gives the
# expected words.  Its option lists are those of each command's --help.
source "${srcdir:-.}/functions.sh"
make_tmpdir

script=$srcdir/../completion/ubdkit.bash
[ -s "$script" ] || fail "$script: missing"

# It loads: in a plain non-interactive bash, and in an interactive one
# with bash-completion's own helpers when installed.
err=$(bash -c '. "$1" && complete -p ubdkit' _ "$script" 2>&1 >/dev/null) ||
  fail "the completion script does not load: $err"
[ -z "$err" ] || fail "loading the completion script printed: $err"
bash -c '. "$1"; complete -p ubdkit' _ "$script" | grep -q -- '-F _ubdkit ubdkit' ||
  fail "loading the script does not register _ubdkit for ubdkit"
if [ -r /usr/share/bash-completion/bash_completion ]; then
  err=$(bash --norc -i -c '. /usr/share/bash-completion/bash_completion
                           . "$0"' "$script" 2>&1 >/dev/null </dev/null |
        grep -v -e 'no job control' -e 'cannot set terminal process group') || true
  [ -z "$err" ] || fail "loading after bash-completion printed: $err"
fi

# A stub ubdkit, first in PATH: `list --json` shows devices 0, 3 and 12;
# everything else is the real one.
mkdir "$tmp/bin"
cat >"$tmp/bin/ubdkit" <<EOF
#!/bin/sh
if [ "\$1 \$2" = "list --json" ]; then
  printf '[\n  { "id": 0, "device": "/dev/ublkb0", "state": "LIVE" },\n'
  printf '  { "id": 3, "device": "/dev/ublkb3", "state": "LIVE" },\n'
  printf '  { "id": 12, "device": "/dev/ublkb12", "state": "QUIESCED" }\n]\n'
  exit 0
fi
exec "$UBDKIT" "\$@"
EOF
chmod +x "$tmp/bin/ubdkit"
mkdir -p "$tmp/work/devices.d"
touch "$tmp/work/disk.img" "$tmp/work/disk2.img" "$tmp/work/devices.d/data.conf" \
  "$tmp/work/devices.d/swap.conf" "$tmp/work/devices.d/README"

# complete WORD... : COMPREPLY, sorted, one line, for the command line
# WORD... as bash splits it (COMP_WORDBREAKS: "size=1G" is three words),
# the cursor at the end of the last word.
complete_words () {
  (cd "$tmp/work" && PATH=$tmp/bin:$PATH bash -c '
    . "$0"
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    _ubdkit ubdkit "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " " | sed "s/ $//"
  ' "$script" "$@")
}

# expect "WORDS" WORD...: completing WORD... gives exactly WORDS.
expect () {
  local want got
  want=$(printf '%s\n' $1 | sort | tr '\n' ' ' | sed 's/ $//')
  shift
  got=$(complete_words "$@")
  [ "$got" = "$want" ] ||
    fail "completing '$*': expected '$want', got '$got'"
}

# Commands.
expect "add del down features list recover resize serve stats up upgrade --help --version" ubdkit ""
expect "recover resize" ubdkit re
# Options and their values.
expect "--tls --tls-allow-dn --tls-certificates --tls-ktls --tls-priority --tls-psk --tls-verify-peer" \
  ubdkit serve --tls
expect "off on require" ubdkit serve --tls ""
expect "on" ubdkit serve --tls = on
expect "off on" ubdkit serve -U - --tls = o
expect "auto off" ubdkit serve --tls-ktls ""
expect "fail-io" ubdkit add --recovery f
expect "disk.img disk2.img" ubdkit serve -P disk
expect "--shrink" ubdkit resize --
# Backends, after options and their values, and their parameters.
expect "file memory nbd nbdkit: null rbd" ubdkit add ""
expect "file memory nbd nbdkit: null rbd" ubdkit add -q 2 --depth 128 ""
expect "nbd nbdkit:" ubdkit serve -U - nb
expect "size= reserve=" ubdkit serve memory ""
expect "readonly= retry= retry-delay=" ubdkit add nbd uri = nbd : //h/ re
expect "disk.img disk2.img" ubdkit serve file file = dis
expect "true false" ubdkit add file file = x direct = ""
# Device ids, from `ubdkit list --json`.
expect "0 3 12" ubdkit del ""
expect "12" ubdkit del --force 1
expect "0 3 12" ubdkit upgrade ""
expect "" ubdkit resize 3 ""
# Device configs of up/down.
expect "data swap" ubdkit up --config-dir devices.d ""
expect "swap" ubdkit down --config-dir=devices.d s
# nbdkit plugins, where nbdkit is installed.
if compgen -G "/usr/lib/*/nbdkit/plugins/nbdkit-memory-plugin.so" >/dev/null; then
  expect "memory" ubdkit serve nbdkit : mem
fi

# `ubdkit serve --` lists exactly serve's options, and `ubdkit add --`
# add's, as their --help does.
for c in serve add; do
  "$UBDKIT" $c --help |
    awk '/^ +-/ { s = $0; sub (/^ +/, "", s); sub (/   *.*/, "", s)
                  n = split (s, p, /, /)
                  for (i = 1; i <= n; i++) if (p[i] ~ /^--/) { split (p[i], w, / /); print w[1] } }' |
    sort -u >"$tmp/help-$c"
  complete_words ubdkit $c -- | tr ' ' '\n' | grep -v -e '^--help$' |
    sort -u >"$tmp/comp-$c"
  [ -s "$tmp/help-$c" ] || fail "no options found in ubdkit $c --help"
  diff -u "$tmp/help-$c" "$tmp/comp-$c" ||
    fail "completing 'ubdkit $c --' does not give the options of its --help"
done

echo "$0: completion loads and completes as expected"
