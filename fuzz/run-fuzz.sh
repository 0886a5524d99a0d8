#!/usr/bin/env bash
# Run the NBD fuzz target for a bounded time (default 120 s).
#
#   fuzz/run-fuzz.sh [SECONDS]
#
# Builds fuzz/fuzz-nbd if needed: in place when this tree is configured
# with --enable-fuzzing, else in a private copy of the sources under
# fuzz/work/build (configured with CC=clang --enable-fuzzing), so a normal
# gcc build here is left alone.  Seeds: fuzz/corpus and fuzz/regressions
# (fuzz/corpus-tls for the third of the time TLS is required);
# what the fuzzer learns goes to fuzz/work/corpus (not committed).
# Exits 1 if the fuzzer found a crash, leak, hang or timeout; its inputs
# are then in fuzz/crashes/ (replay one with `fuzz-nbd FILE`, and add it
# to fuzz/regressions/ once fixed, where tests/unit-nbd-replay runs it).
set -euo pipefail

seconds=${1:-120}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
work="$here/work"
crashes="$here/crashes"
mkdir -p "$work/corpus" "$crashes"

if [ -f "$top/config.status" ] && grep -q '^S\["FUZZING_TRUE"\]=""' "$top/config.status"; then
  make -C "$top" fuzz/fuzz-nbd >/dev/null
  fuzzer="$top/fuzz/fuzz-nbd"
else
  build="$work/build"
  command -v clang >/dev/null || { echo "$0: clang is needed" >&2; exit 1; }
  git -C "$top" rev-parse --git-dir >/dev/null 2>&1 ||
    { echo "$0: not a git checkout: configure with CC=clang --enable-fuzzing here" >&2; exit 1; }
  mkdir -p "$build"
  # Copy the tracked sources and the uncommitted changes to them; cp -u
  # keeps timestamps, so make rebuilds only what changed.
  (cd "$top" && git ls-files -co --exclude-standard -z |
     grep -zv '^fuzz/\(work\|crashes\|corpus\|corpus-tls\|regressions\)/' |
     xargs -0 cp -u --parents --preserve=timestamps -t "$build")
  if [ ! -f "$build/Makefile" ]; then
    echo "$0: configuring a fuzzing build in $build"
    (cd "$build" && autoreconf -fi >/dev/null 2>&1 &&
       ./configure CC=clang --enable-fuzzing >/dev/null) ||
      { echo "$0: configure failed (see $build/config.log)" >&2; exit 1; }
  fi
  make -C "$build" -j2 fuzz/fuzz-nbd >/dev/null
  fuzzer="$build/fuzz/fuzz-nbd"
fi

# Two thirds of the time on the plaintext server, one third on one that
# requires TLS (FUZZ_NBD_TLS, see fuzz-nbd.c), each with its own corpus.
run () {
  local secs=$1 corpus=$2
  shift 2
  before=$(ls "$crashes" | wc -l)
  mkdir -p "$corpus"
  set +e
  "$fuzzer" -max_len=65536 -max_total_time="$secs" -timeout=60 \
    -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$crashes/" \
    "$corpus" "$@" 2>&1 |
    tee -a "$work/fuzz.log" |
    grep --line-buffered -E '(DONE|pulse|INITED|ERROR|SUMMARY|stat::|fuzz-nbd:|Test unit written)'
  status=${PIPESTATUS[0]}
  set -e
  after=$(ls "$crashes" | wc -l)
  if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
    echo "$0: the fuzzer found a problem (exit $status${FUZZ_NBD_TLS:+, FUZZ_NBD_TLS=$FUZZ_NBD_TLS}); full log: $work/fuzz.log" >&2
    ls -l "$crashes" >&2
    exit 1
  fi
}
: > "$work/fuzz.log"
tls_secs=$(( seconds / 3 ))
run $(( seconds - tls_secs )) "$work/corpus" "$here/corpus" "$here/regressions"
if [ "$tls_secs" -gt 0 ]; then
  export FUZZ_NBD_TLS=require
  run "$tls_secs" "$work/corpus-tls" "$here/corpus-tls" "$here/corpus"
  unset FUZZ_NBD_TLS
fi
echo "$0: no crash, leak or hang in $seconds s"
