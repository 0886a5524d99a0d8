#!/bin/bash
# Limits and fairness: handshake timeout, --max-connections, 200 idle
# connections, a client that never reads its replies, writes before DISC.
source "${srcdir:-.}/functions.sh"
requires "$PYTHON" -c 'import nbd'
ulimit -n 4096 2>/dev/null || true
# A stalled client must fail the test, not hang it.
timeout 180 "$PYTHON" "$srcdir/test-nbd-limits.py" "$UBDKIT"
