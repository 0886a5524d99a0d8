#!/usr/bin/python3
# The host's side of tests/test-vm-rbd.sh: a guest asks, over its network,
# for what only the host can do to the cluster, one request per connection,
# a line in and a line out:
#   kill-osd            SIGKILL the OSD, leave it down 2 s, start it again;
#                       answers "up" once the map says it is up
#   resize IMAGE SIZE   rbd resize (shrinking allowed) rbd/IMAGE to SIZE;
#                       answers "ok"
# Anything else, or a step that fails, answers "error: WHY".  Each request
# and its timing is appended to LOGFILE.  The port it listens on (ADDR, any
# port) is written to PORTFILE.  It serves until killed.
# Usage: ctl.py ADDR CLUSTER_SH CLUSTER_DIR PORTFILE LOGFILE
import os
import socket
import subprocess
import sys
import time

addr, cluster, cdir, portfile, logfile = sys.argv[1:]


def log(msg):
    with open(logfile, "a") as f:
        print(msg, file=f)


def run(*argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                               r.stdout.decode().strip()))


def serve(words):
    t0 = time.monotonic()
    if words == ["kill-osd"]:
        run(cluster, "kill-osd", cdir)
        t1 = time.monotonic()
        time.sleep(2)
        run(cluster, "start-osd", cdir)
        t2 = time.monotonic()
        log("OSD killed (gone in %.1f s), down 2 s, up again in %.1f s"
            % (t1 - t0, t2 - t1 - 2))
        return "up"
    if len(words) == 3 and words[0] == "resize":
        run("rbd", "resize", "--no-progress", "--allow-shrink", "--size",
            words[2], "rbd/" + words[1])
        log("rbd/%s resized to %s in %.1f s"
            % (words[1], words[2], time.monotonic() - t0))
        return "ok"
    raise RuntimeError("unknown request %r" % " ".join(words))


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, 0))
s.listen(4)
with open(portfile + ".t", "w") as f:
    print(s.getsockname()[1], file=f)
os.rename(portfile + ".t", portfile)
while True:
    c, _ = s.accept()
    # The file and the socket both hold the connection: the guest sees it
    # end (and its nc returns) only once both are closed.
    with c, c.makefile("rwb") as f:
        req = f.readline().decode(errors="replace").split()
        try:
            reply = serve(req)
        except Exception as e:
            reply = "error: %s" % e
            log("%s: %s" % (" ".join(req), reply))
        f.write(reply.encode() + b"\n")
        f.flush()
        c.shutdown(socket.SHUT_RDWR)
