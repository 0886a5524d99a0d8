# Raw-protocol TLS refusals, run by test-nbd-tls-refusals.sh.
#
# usage: test-nbd-tls-refusals.py SOCKET PID LOG HS_FAILED CLIENTDIR EXACT
#
# SOCKET is a server with --tls=require and X.509 certificates (no client
# certificate checks), PID its pid, LOG its stderr, HS_FAILED the text of
# its failed-handshake line, CLIENTDIR a client certificate directory
# (ca-cert.pem client-cert.pem client-key.pem) and EXACT 1 when exactly one
# such line must come per failed handshake (ubdkit), 0 for at least one
# (nbdkit).  After each case a libnbd client over TLS must still read back
# what was written first, and the server must still be alive.

import os
import socket
import ssl
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd  # noqa: E402
import nbdraw  # noqa: E402
from nbdraw import Closed, Conn, rep_name  # noqa: E402

sock, pid, log, hs_failed, cdir, exact = sys.argv[1:7]
pid = int(pid)
exact = exact == "1"
DATA = os.urandom(65536)


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(cdir, "ca-cert.pem"))
    ctx.load_cert_chain(os.path.join(cdir, "client-cert.pem"),
                        os.path.join(cdir, "client-key.pem"))
    return ctx


def good_client(write=False):
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(cdir)
    h.connect_unix(sock)
    check(h.get_tls_negotiated(), "good client: TLS not negotiated")
    if write:
        h.pwrite(DATA, 1 << 20)
    check(h.pread(len(DATA), 1 << 20) == DATA, "good client: data differs")
    h.shutdown()
    os.kill(pid, 0)


def hs_count():
    with open(log, errors="replace") as f:
        return sum(hs_failed in line for line in f)


def expect_hs_failure(before, what):
    deadline = time.time() + 5
    while hs_count() <= before and time.time() < deadline:
        time.sleep(0.05)
    n = hs_count()
    check(n > before, "%s: no '%s' line in the log" % (what, hs_failed))
    if exact:
        time.sleep(0.2)
        n = hs_count()
        check(n == before + 1, "%s: %d '%s' lines, expected one"
              % (what, n - before, hs_failed))


def closed_without_nbd_reply(c, what):
    """The server closes; what it sends first, if anything, is TLS alert
    records (content type 21), never an NBD option reply."""
    got = c.wait_closed()
    only_alerts(got, what)
    return got


def only_alerts(got, what):
    """GOT holds no NBD option reply, only TLS alert records."""
    check(struct.pack(">Q", nbdraw.OPT_REPLY_MAGIC) not in got,
          "%s: the server sent an NBD option reply: %r" % (what, got[:64]))
    i = 0
    while i < len(got):
        check(got[i] == 21 and i + 5 <= len(got),
              "%s: the server sent a non-alert record: %r" % (what, got[i:i + 16]))
        i += 5 + struct.unpack(">H", got[i + 3:i + 5])[0]


def case_plaintext_options():
    # Every option but STARTTLS and ABORT: NBD_REP_ERR_TLS_REQD.
    with Conn(sock) as c:
        c.handshake()
        for opt, data in ((nbdraw.OPT_LIST, b""),
                          (nbdraw.OPT_INFO, struct.pack(">IH", 0, 0)),
                          (nbdraw.OPT_GO, struct.pack(">IH", 0, 0)),
                          (nbdraw.OPT_STRUCTURED_REPLY, b""),
                          (nbdraw.OPT_LIST_META_CONTEXT, struct.pack(">II", 0, 0)),
                          (nbdraw.OPT_GO, struct.pack(">IH", 0, 0))):
            rep, _ = c.option(opt, data)
            check(rep == nbdraw.REP_ERR_TLS_REQD,
                  "plaintext option %d: %s, expected ERR_TLS_REQD"
                  % (opt, rep_name(rep)))
        # ABORT: an ACK or just the close.
        c.send_option(nbdraw.OPT_ABORT)
        try:
            _, rep, _ = c.recv_option_reply()
            check(rep == nbdraw.REP_ACK, "ABORT: %s" % rep_name(rep))
        except Closed:
            pass


def case_plaintext_export_name():
    with Conn(sock) as c:
        c.handshake()
        c.send_option(nbdraw.OPT_EXPORT_NAME, b"")
        got = c.wait_closed()
        check(got == b"", "EXPORT_NAME before TLS: the server sent %r" % got[:64])


def case_starttls_with_data():
    with Conn(sock) as c:
        c.handshake()
        rep, _ = c.option(nbdraw.OPT_STARTTLS, b"xx")
        check(rep == nbdraw.REP_ERR_INVALID,
              "STARTTLS with data: %s, expected ERR_INVALID" % rep_name(rep))
        # The connection stays in plaintext negotiation.
        rep, _ = c.option(nbdraw.OPT_LIST)
        check(rep == nbdraw.REP_ERR_TLS_REQD, "LIST after it: %s" % rep_name(rep))


def case_starttls_twice():
    with Conn(sock) as c:
        c.handshake()
        check(c.starttls(context()) == nbdraw.REP_ACK, "STARTTLS refused")
        rep, _ = c.option(nbdraw.OPT_STARTTLS)
        check(rep == nbdraw.REP_ERR_INVALID,
              "second STARTTLS: %s, expected ERR_INVALID" % rep_name(rep))
        # Still usable: GO, then a read of what the good client wrote.
        c.go()
        err, got = c.read(1 << 20, len(DATA))
        check(err == 0 and got == DATA, "read after a refused second STARTTLS")
        c.send_request(nbdraw.CMD_DISC)


def case_garbage():
    before = hs_count()
    with Conn(sock) as c:
        c.handshake()
        rep, _ = c.option(nbdraw.OPT_STARTTLS)
        check(rep == nbdraw.REP_ACK, "STARTTLS: %s" % rep_name(rep))
        c.send(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(400))
        closed_without_nbd_reply(c, "garbage instead of a ClientHello")
    expect_hs_failure(before, "garbage instead of a ClientHello")


def client_hello():
    ctx = context()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def case_vanish(part):
    before = hs_count()
    with Conn(sock) as c:
        c.handshake()
        rep, _ = c.option(nbdraw.OPT_STARTTLS)
        check(rep == nbdraw.REP_ACK, "STARTTLS: %s" % rep_name(rep))
        if part:
            hello = client_hello()
            c.send(hello[:len(hello) // 2])
        time.sleep(0.1)
        c.sock.shutdown(socket.SHUT_RDWR)
    expect_hs_failure(before, "client gone mid-handshake (%s)"
                      % ("half a ClientHello" if part else "nothing sent"))


def silent_or_closed_without_nbd_reply(c, what, wait=2.0):
    """Within WAIT seconds the server says nothing, or closes after TLS
    alerts only: either way no NBD reply to what came in plaintext."""
    c.sock.settimeout(wait)
    got = b""
    try:
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, TimeoutError):
        pass
    except ConnectionResetError:
        pass
    only_alerts(got, what)


def case_injection():
    # STARTTLS and a plaintext GO in one write: the server must not answer
    # the GO.  nbdkit feeds those bytes to the TLS handshake, which fails;
    # ubdkit drops what came behind STARTTLS and waits for a ClientHello,
    # which never comes: it must stay silent, and log the failed handshake
    # once the client hangs up.
    before = hs_count()
    with Conn(sock) as c:
        c.handshake()
        go = struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_GO, 6) + struct.pack(">IH", 0, 0)
        lst = struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_LIST, 0)
        c.send(struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_STARTTLS, 0) + go + lst)
        opt, rep, _ = c.recv_option_reply()
        check(opt == nbdraw.OPT_STARTTLS and rep == nbdraw.REP_ACK,
              "injection: STARTTLS answered %s" % rep_name(rep))
        silent_or_closed_without_nbd_reply(c, "plaintext injected after STARTTLS")
    expect_hs_failure(before, "plaintext injected after STARTTLS")


cases = [
    ("plaintext options get ERR_TLS_REQD", case_plaintext_options),
    ("plaintext EXPORT_NAME closes", case_plaintext_export_name),
    ("STARTTLS with data gets ERR_INVALID", case_starttls_with_data),
    ("STARTTLS twice: the second gets ERR_INVALID", case_starttls_twice),
    ("garbage instead of a ClientHello", case_garbage),
    ("client gone right after STARTTLS's ACK", lambda: case_vanish(False)),
    ("client gone after half a ClientHello", lambda: case_vanish(True)),
    ("plaintext injected after STARTTLS is not acted on", case_injection),
]

good_client(write=True)
for name, fn in cases:
    try:
        fn()
        good_client()
    except Exception as e:
        print("FAIL: %s: %s: %s" % (name, type(e).__name__, e))
        sys.exit(1)
    print("ok - %s; a good client then works" % name)
