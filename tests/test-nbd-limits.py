# Limits and fairness of ubdkit's NBD server, run by test-nbd-limits.sh.
#
# usage: test-nbd-limits.py UBDKIT
#
# Each case starts its own server (memory backend) with the limits it
# tests, misbehaves on raw connections (nbdraw), and checks that a
# well-behaved libnbd client is still served and that the server logs why
# it refused someone.

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd  # noqa: E402
import nbdraw  # noqa: E402
from nbdraw import CMD_READ, CMD_WRITE, Closed, Conn  # noqa: E402

MiB = 1 << 20
UBDKIT = sys.argv[1]


class Server:
    def __init__(self, *opts, size="64M"):
        self.dir = tempfile.mkdtemp(prefix="ubdkit-limits.")
        self.sock = os.path.join(self.dir, "sock")
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = subprocess.Popen(
            [UBDKIT, "serve", "-U", self.sock, *opts, "memory",
             "size=" + size], stderr=self.log)
        for _ in range(200):
            if os.path.exists(self.sock):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("server did not start")

    def log_text(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def good_client_reads(self, offset=0, expect=None):
        h = nbd.NBD()
        h.connect_unix(self.sock)
        data = h.pread(4096, offset)
        h.shutdown()
        if expect is not None and data != expect:
            raise AssertionError("good client read wrong data")

    def stop(self):
        self.proc.terminate()
        if self.proc.wait(timeout=20) != 0:
            raise AssertionError("server exit status %d" % self.proc.returncode)


def ok(what):
    print("ok - " + what, flush=True)


def case_handshake_timeout():
    s = Server("--handshake-timeout", "2")
    c = Conn(s.sock, timeout=8)
    c.greeting()
    t = time.time()
    c.wait_closed()                 # raises socket.timeout if never closed
    waited = time.time() - t
    assert 1 <= waited <= 6, "closed after %.1f s, not about 2" % waited
    assert "handshake-timeout" in s.log_text(), "no log line for the timeout"
    s.good_client_reads()
    s.stop()
    ok("a client that never negotiates is closed after --handshake-timeout")


def case_max_connections():
    s = Server("--max-connections", "3", "-t", "1")
    held = [Conn(s.sock).open() for _ in range(3)]
    extra = Conn(s.sock, timeout=5)
    try:
        extra.handshake()
        raise AssertionError("4th connection got a greeting")
    except (Closed, ConnectionResetError, nbdraw.ProtocolError, struct.error):
        pass
    assert "--max-connections" in s.log_text(), "no log line for the refusal"
    held.pop().close()
    time.sleep(0.3)
    s.good_client_reads()           # a slot is free again
    for c in held:
        c.close()
    s.stop()
    ok("--max-connections refuses the extra client with a log line")


def case_idle_connections():
    s = Server()
    idle = [Conn(s.sock).open() for _ in range(200)]
    s.good_client_reads()
    for c in idle:
        c.close()
    s.stop()
    ok("200 idle connections do not stop a 201st client")


def case_client_not_reading():
    s = Server("-t", "1", "--depth", "8", "--buffer-size", "1M")
    h = nbd.NBD()
    h.connect_unix(s.sock)
    h.pwrite(b"\xab" * 4096, 8 * MiB)
    h.shutdown()
    bad = Conn(s.sock).open()
    bad.sock.setblocking(False)
    sent = 0
    for i in range(100):            # 100 MiB of replies it will never read
        try:
            bad.sock.send(struct.pack(">IHHQQI", nbdraw.REQUEST_MAGIC, 0,
                                      CMD_READ, i, 0, MiB))
            sent += 1
        except BlockingIOError:
            break
    time.sleep(1)
    t = time.time()
    s.good_client_reads(8 * MiB, b"\xab" * 4096)
    assert time.time() - t < 5, "good client was stalled"
    bad.close()
    s.stop()
    ok("a client that never reads its %d replies does not stall others"
       % sent)


def case_writes_before_disc():
    s = Server()
    for rnd in range(10):
        c = Conn(s.sock).open()
        for i in range(16):
            data = bytes([rnd * 16 + i]) * 65536
            c.send_request(CMD_WRITE, (i + 16 * rnd) * 65536, len(data),
                           handle=i, payload=data)
        c.send_request(nbdraw.CMD_DISC)   # no reply is read
        c.close()
    h = nbd.NBD()
    h.connect_unix(s.sock)
    for rnd in range(10):
        for i in range(16):
            got = h.pread(65536, (i + 16 * rnd) * 65536)
            assert got == bytes([rnd * 16 + i]) * 65536, \
                "write %d of round %d lost" % (i, rnd)
    h.shutdown()
    s.stop()
    ok("writes sent just before DISC all land (10 rounds of 16)")


for case in (case_handshake_timeout, case_max_connections,
             case_idle_connections, case_client_not_reading,
             case_writes_before_disc):
    try:
        case()
    except Exception as e:
        print("FAIL: %s: %r" % (case.__name__, e), flush=True)
        sys.exit(1)
print("5 passed, 0 failed")
