#!/usr/bin/python3
# A NOTIFY_SOCKET for tests: receive sd_notify datagrams on ADDR (a path,
# or @name for an abstract socket) and write one line per datagram to OUT,
# its lines joined by " | ".  On READY=1 it checks at once that the server
# answers an NBD client on SOCKET (if given) and records "ANSWERS" or
# "NOT-ANSWERING: why", so a READY sent too early fails the test.
# Usage: systemd-notify-listen.py ADDR OUT [SOCKET]; runs until killed.
import os
import socket
import sys

addr, out = sys.argv[1], sys.argv[2]
nbd_sock = sys.argv[3] if len(sys.argv) > 3 else None
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + addr[1:] if addr.startswith("@") else addr)
with open(out + ".bound", "w"):
    pass
with open(out, "a", buffering=1) as f:
    while True:
        msg = s.recv(4096).decode()
        f.write(" | ".join(msg.split("\n")) + "\n")
        if nbd_sock and "READY=1" in msg.split("\n"):
            try:
                import nbd
                h = nbd.NBD()
                h.connect_unix(nbd_sock)
                f.write("ANSWERS size=%d\n" % h.get_size())
                h.shutdown()
            except Exception as e:
                f.write("NOT-ANSWERING: %s\n" % e)
