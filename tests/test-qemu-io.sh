#!/usr/bin/env bash
# qemu-io pattern writes and reads: aligned, unaligned, crossing 1 MiB
# boundaries, a single 32 MiB request, end of disk, zero, discard, aio.
source "${srcdir:-.}/functions.sh"
requires_prog qemu-io
make_tmpdir
export tmp

M=1048576
write_cmds=(
  "write -P 0xab 0 64k"
  "write -P 0x11 1048000 2000"
  "write -P 0x22 $((2*M - 1)) 2"
  "write -P 0x33 $((3*M + 7)) 1M"
  "write -P 0xcd 16M 32M"
  "write -z $((16*M + 512*1024)) 1M"
  "discard 40M 1M"
  "aio_write -P 0x55 50M 1M"
  "aio_write -P 0x66 51M 1M"
  "aio_write -P 0x77 $((53*M - 3)) 6"
  "aio_flush"
  "write -P 0x44 63M 1M"
  "flush"
)
read_cmds=(
  "read -P 0xab 0 64k"
  "read -P 0 64k $((1048000 - 65536))"
  "read -P 0x11 1048000 2000"
  "read -P 0 $((1048000 + 2000)) $((2*M - 1 - 1048000 - 2000))"
  "read -P 0x22 $((2*M - 1)) 2"
  "read -P 0x33 $((3*M + 7)) 1M"
  "read -P 0 $((4*M + 7)) $((12*M - 7))"
  "read -P 0xcd 16M 512k"
  "read -P 0 $((16*M + 512*1024)) 1M"
  "read -P 0xcd $((17*M + 512*1024)) $((22*M + 512*1024))"
  "read -P 0 40M 1M"
  "read -P 0xcd 41M 7M"
  "read -P 0x55 50M 1M"
  "read -P 0x66 51M 1M"
  "read -P 0 52M $((M - 3))"
  "read -P 0x77 $((53*M - 3)) 6"
  "read -P 0 $((53*M + 3)) $((10*M - 3))"
  "read -P 0x44 63M 1M"
)

# Reads run both on the writing connection and on a fresh one.
args=() rargs=()
for c in "${write_cmds[@]}" "${read_cmds[@]}"; do args+=(-c "$c"); done
for c in "${read_cmds[@]}" "write -P 0xcd 16M 32M" "read -P 0xcd 16M 32M"; do
  rargs+=(-c "$c")
done
echo "${args[@]@Q}" > "$tmp/args"
echo "${rargs[@]@Q}" > "$tmp/rargs"

# run_qemu_io SERVE-ARGS...: both qemu-io passes against one server.
run_qemu_io () {
  rm -f "$tmp/out1" "$tmp/out2"
  $UBDKIT serve -U - --run '
      eval "set -- $(cat "$tmp/args")"
      qemu-io -f raw "$@" "$uri" > "$tmp/out1" 2>&1 || exit 1
      eval "set -- $(cat "$tmp/rargs")"
      qemu-io -f raw "$@" "$uri" > "$tmp/out2" 2>&1' "$@" ||
    { cat "$tmp/out1" "$tmp/out2" 2>/dev/null; fail "$*: qemu-io exited non-zero"; }
  if grep -Ei 'fail|error' "$tmp/out1" "$tmp/out2"; then
    fail "$*: qemu-io reported errors (above)"
  fi
  n=$(grep -c '^read ' "$tmp/out1" "$tmp/out2" | awk -F: '{s+=$2} END {print s}')
  [ "$n" -eq $(( ${#read_cmds[@]} * 2 + 1 )) ] ||
    fail "$*: expected $(( ${#read_cmds[@]} * 2 + 1 )) completed reads, got $n"
}

run_qemu_io memory size=64M
truncate -s 64M "$tmp/disk.img"
run_qemu_io file file="$tmp/disk.img" direct=true
