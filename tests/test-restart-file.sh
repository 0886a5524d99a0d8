#!/usr/bin/env bash
# Data written to a file backend survives a SIGTERM (exit 0) and a fresh
# ubdkit serve on the same file reads it back identically.
source "${srcdir:-.}/functions.sh"
requires_prog nbdcopy
make_tmpdir

head -c $((16*1024*1024 + 12345)) /dev/urandom > "$tmp/src"
sum=$(md5sum < "$tmp/src")
truncate -s 32M "$tmp/disk.img"

start_server sock1 pid1 file file="$tmp/disk.img"
nbdcopy "$tmp/src" "nbd+unix:///?socket=$sock1" || fail "nbdcopy into server 1 failed"
kill -TERM "$pid1"
status=0; wait "$pid1" || status=$?
[ $status -eq 0 ] || fail "ubdkit serve exited with status $status after SIGTERM"

[ "$(head -c $((16*1024*1024 + 12345)) "$tmp/disk.img" | md5sum)" = "$sum" ] ||
  fail "backing file differs after shutdown"

start_server sock2 pid2 file file="$tmp/disk.img"
nbdcopy "nbd+unix:///?socket=$sock2" "$tmp/out" || fail "nbdcopy from server 2 failed"
[ "$(stat -c %s "$tmp/out")" -eq $((32*1024*1024)) ] || fail "export size is not 32 MiB"
[ "$(head -c $((16*1024*1024 + 12345)) "$tmp/out" | md5sum)" = "$sum" ] ||
  fail "data read back after restart differs"
cmp -s -i $((16*1024*1024 + 12345)):0 "$tmp/out" <(head -c $((16*1024*1024 - 12345)) /dev/zero) ||
  fail "tail of the export after restart is not zero"
