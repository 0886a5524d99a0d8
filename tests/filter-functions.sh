# Shared by the filter tests: serve a chain with ubdkit and with nbdkit
# and compare what nbdinfo, nbdcopy and nbdinfo --map see.  Needs $tmp,
# and for compare: $img (a disk image for the file backend), $data (the
# data plugin's data=... argument), $file_ignore (fields in which the bare
# file backends differ).

# What nbdinfo --json says that must match.  Not compared: uri (socket
# paths differ), block_size_* unless nbdkit sends them (ubdkit always
# sends NBD_INFO_BLOCK_SIZE, nbdkit 1.32 only when a layer has block
# sizes), and the answers in which the bare backends differ already
# ($ignore: ubdkit's native file backend is not nbdkit's file plugin).
fields () {
  "$PYTHON" -c 'import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
ignore = sys.argv[2].split()
for k in sorted(e):
    if k in ignore:
        continue
    if k.startswith("can_") or k.startswith("is_") or k in ("export-size", "contexts", "content"):
        print(k, e[k])' "$1" "${ignore:-}"
}
# A maximum above ubdkit's largest request (64 MiB) is served as 64 MiB.
blocksizes () {
  "$PYTHON" -c 'import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
for k in sorted(e):
    if k.startswith("block_size"):
        v = e[k]
        print(k, min(v, 64 << 20) if k == "block_size_maximum" else v)' "$1"
}

# serve_both UBDKIT-BACKEND NBDKIT-PLUGIN ARGS...: $tmp/{u,n}.{json,sum,map}.
# The arguments (--filter=... and key=value) are the same for both.
serve_both () {
  local ub=$1 nb=$2 run
  shift 2
  run='nbdinfo --json "$uri" > "$tmp/$who.json" &&
       nbdcopy "$uri" - | sha256sum > "$tmp/$who.sum" &&
       nbdinfo --map --totals "$uri" > "$tmp/$who.map"'
  who=u "$UBDKIT" serve -U - "$@" "$ub" "${args[@]}" --run "$run" 2>"$tmp/u.err" ||
    fail "ubdkit serve $* $ub ${args[*]}: $(cat "$tmp/u.err")"
  who=n nbdkit -U - "$@" "$nb" "${args[@]}" --run "$run" 2>"$tmp/n.err" ||
    fail "nbdkit $* $nb ${args[*]}: $(cat "$tmp/n.err")"
}

# compare_one UBDKIT-BACKEND NBDKIT-PLUGIN FILTER-OPTIONS...
compare_one () {
  local what="$* ${args[*]}"
  serve_both "$@"
  diff -u <(fields "$tmp/n.json") <(fields "$tmp/u.json") ||
    fail "$what: capabilities or size differ (- nbdkit, + ubdkit)"
  if [ -n "$(blocksizes "$tmp/n.json")" ]; then
    diff -u <(blocksizes "$tmp/n.json") <(blocksizes "$tmp/u.json") ||
      fail "$what: block sizes differ (- nbdkit, + ubdkit)"
  fi
  cmp -s "$tmp/n.sum" "$tmp/u.sum" || fail "$what: content differs"
  diff -u "$tmp/n.map" "$tmp/u.map" || fail "$what: allocation map differs"
  echo "$0: $what: same"
}

# compare FILTER-OPTIONS... [-- KEY=VALUE...]: the chain over ubdkit's
# native file backend (file=disk.img) and over nbdkit's data plugin
# (nbdkit:data, data=... size=8M), against nbdkit's file and data
# plugins with the same arguments.  $fileonly: the file backend only;
# $dataonly: the data plugin only.
compare () {
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  args=("$@" "file=$img")
  [ -z "${dataonly:-}" ] && ignore=$file_ignore compare_one file file "${opts[@]}"
  [ -n "${fileonly:-}" ] && return
  args=("$@" "$data" size=8M)
  compare_one nbdkit:data data "${opts[@]}"
}

