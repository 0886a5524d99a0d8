# Helpers for the rbd tests (tests/test-rbd*.sh), after functions.sh:
#   source "$srcdir/ceph/functions.sh"
# requires_ceph skips unless Ceph's daemons and tools are installed and
# ubdkit has the rbd backend; start_ceph brings up a cluster of the test's
# own (tests/ceph/cluster.sh) under $tmp/ceph, torn down at exit.

requires_ceph () {
  local p
  for p in ceph ceph-mon ceph-osd monmaptool rbd; do
    command -v $p >/dev/null 2>&1 ||
      skip "'$p' is not installed (Debian: ceph-mon ceph-osd ceph-common)"
  done
  "$UBDKIT" serve --help 2>&1 | grep -q '^  rbd ' ||
    skip "ubdkit was built without librbd (Debian: librbd-dev librados-dev)"
}

# start_ceph [cluster.sh start options]: sets and exports CEPH_CONF and
# CEPH_ARGS, which every client here (ubdkit, rbd, qemu-img) then uses.
start_ceph () {
  local out
  [ -n "${tmp:-}" ] || make_tmpdir
  cleanup_fn "'$srcdir/ceph/cluster.sh' stop '$tmp/ceph'"
  out=$("$srcdir/ceph/cluster.sh" start "$tmp/ceph" "$@") ||
    fail "the Ceph cluster did not start"
  eval "$out"
  export CEPH_CONF CEPH_ARGS
}

ceph_cluster () { "$srcdir/ceph/cluster.sh" "$1" "$tmp/ceph"; }

# sha IMAGE-OR-FILE: the sha256 of a file, or of an image as `rbd export`
# reads it ("rbd/NAME[@SNAP]").
sha_file () { sha256sum < "$1" | cut -d' ' -f1; }
sha_rbd () { rbd export "$1" - 2>/dev/null | sha256sum | cut -d' ' -f1; }
