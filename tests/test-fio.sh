#!/usr/bin/env bash
# fio's nbd engine: three jobs of random read/write at iodepth 16 over a
# 48 MiB memory disk with crc32c verification; no errors allowed.  4k and
# 12k writes are gathered in the connection's input buffer with their
# headers (12k ones straddle chunks of the memory backend), 64k ones are
# received straight into the backend.
source "${srcdir:-.}/functions.sh"
requires_prog fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio lacks the nbd ioengine"
make_tmpdir
export tmp

cat > "$tmp/job.fio" <<'FIO'
[global]
ioengine=nbd
uri=${uri}
rw=randrw
iodepth=16
size=16m
verify=crc32c
verify_fatal=1
do_verify=1
verify_state_save=0

[small]
bs=4k
offset=0

[large]
bs=64k
offset=16m

[mid]
bs=12k
offset=32m
FIO

# run_fio SERVE-OPTS...: run the job against a fresh 48 MiB memory disk.
run_fio () {
  rm -f "$tmp/out"
  $UBDKIT serve "$@" -U - --run 'cd "$tmp" && uri="$uri" fio --output="$tmp/out" "$tmp/job.fio"' \
      memory size=48M || { cat "$tmp/out" 2>/dev/null; fail "serve $*: fio exited non-zero"; }
  [ "$(grep -c 'err= 0' "$tmp/out")" -eq 3 ] ||
    { cat "$tmp/out"; fail "serve $*: fio: expected three jobs with err= 0"; }
  if grep -Ei 'verify.*(bad|fail)|crc32c: wanted' "$tmp/out"; then
    fail "serve $*: fio reported verify errors"
  fi
}

run_fio
# One thread with two request slots: most requests wait for a free slot.
run_fio -t 1 --depth 2
