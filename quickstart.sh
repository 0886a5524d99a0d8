#!/bin/sh
# ubdkit quick start on Debian 12, as root:
#   ./quickstart.sh serve [ubdkit serve options]   install, build, serve
#   ./quickstart.sh check                          install, build, run the tests
# Installs the Debian packages ubdkit builds and tests with, builds with
# warnings as errors, then serves (default: a 1 GiB memory disk on
# nbd://localhost:10809/, bound to localhost unless --bind or -U is given)
# or runs `make check`, `make distcheck`, `make
# check-sanitizers` (the tests again, built with ASan+UBSan) and the NBD
# fuzzer for 120 s (fuzz/run-fuzz.sh).
set -eu
cd "$(dirname "$0")"

BUILD_DEPS="build-essential autoconf automake libtool pkg-config
  liburing-dev libnbd-dev nbdkit-plugin-dev libgnutls28-dev
  librbd-dev librados-dev
  perl"
TEST_DEPS="libnbd-bin python3-libnbd nbdkit nbdfuse fuse3 qemu-utils fio
  nbd-client e2fsprogs util-linux procps psmisc
  qemu-system-x86 qemu-system-data busybox-static cpio xz-utils
  valgrind clang libclang-rt-14-dev gnutls-bin
  man-db groff-base bash-completion
  ceph-mon ceph-osd ceph-common rbd-nbd qemu-block-extra"

install_deps () {
  missing=
  for p in $*; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
      missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "quickstart: need root to install:$missing" >&2
    exit 1
  fi
  echo "quickstart: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

build () {
  [ -f configure ] || autoreconf -fi
  [ -f Makefile ] || ./configure --enable-werror
  make -j"$(nproc)"
}

mode=${1:-}
[ $# -gt 0 ] && shift
case "$mode" in
  serve)
    install_deps $BUILD_DEPS
    build
    # A writable disk is no business of the network's: localhost only,
    # unless told where (--bind ADDR) or told to use a Unix socket (-U).
    case " $* " in
      *" --bind"*|*" -U"*) exec ./ubdkit serve "$@" ;;
      *) exec ./ubdkit serve --bind localhost "$@" ;;
    esac
    ;;
  check)
    install_deps $BUILD_DEPS $TEST_DEPS
    build
    make -j"$(nproc)" check
    make -j"$(nproc)" distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-werror
    make -j"$(nproc)" check-sanitizers
    fuzz/run-fuzz.sh 120
    ;;
  *)
    echo "usage: $0 serve [ubdkit serve options] | check" >&2
    exit 2
    ;;
esac
