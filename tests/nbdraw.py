# nbdraw: a tiny raw NBD client for protocol tests (fixed newstyle only).
#
# It speaks the wire format directly with socket+struct so tests can send
# requests that no well-behaved client library would produce: bad magic,
# bogus lengths, unknown options and commands, truncated messages.
# Written from the NBD protocol description (doc/proto.md).
# All integers on the wire are big-endian ("network byte order").

import socket
import struct

# Handshake.
NBDMAGIC = 0x4E42444D41474943          # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054          # "IHAVEOPT"
OLDSTYLE_MAGIC = 0x00420281861253
FLAG_FIXED_NEWSTYLE = 1 << 0           # handshake flags (server)
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0         # client flags
FLAG_C_NO_ZEROES = 1 << 1

# Options and option replies.
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_REPLY_MAGIC = 0x3E889045565A9
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_BIT = 1 << 31
REP_ERR_UNSUP = REP_ERR_BIT | 1
REP_ERR_POLICY = REP_ERR_BIT | 2
REP_ERR_INVALID = REP_ERR_BIT | 3
REP_ERR_UNKNOWN = REP_ERR_BIT | 6
REP_ERR_TOO_BIG = REP_ERR_BIT | 9
INFO_EXPORT = 0

# Transmission flags (from NBD_INFO_EXPORT).
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1

# Requests and simple replies.
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

# NBD error values (not necessarily the host's errno numbers).
NBD_EPERM = 1
NBD_EIO = 5
NBD_ENOMEM = 12
NBD_EINVAL = 22
NBD_ENOSPC = 28
NBD_EOVERFLOW = 75
NBD_ESHUTDOWN = 108
ERROR_NAMES = {0: "OK", 1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL",
               28: "ENOSPC", 75: "EOVERFLOW", 95: "ENOTSUP",
               108: "ESHUTDOWN"}


class ProtocolError(Exception):
    """The server sent something that does not follow the protocol."""


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


def rep_name(rep):
    names = {REP_ACK: "ACK", REP_SERVER: "SERVER", REP_INFO: "INFO",
             REP_META_CONTEXT: "META_CONTEXT", REP_ERR_UNSUP: "ERR_UNSUP",
             REP_ERR_POLICY: "ERR_POLICY", REP_ERR_INVALID: "ERR_INVALID",
             REP_ERR_UNKNOWN: "ERR_UNKNOWN", REP_ERR_TOO_BIG: "ERR_TOO_BIG"}
    return names.get(rep, "0x%x" % rep)


def cmd_name(cmd):
    names = {CMD_READ: "READ", CMD_WRITE: "WRITE", CMD_DISC: "DISC",
             CMD_FLUSH: "FLUSH", CMD_TRIM: "TRIM", CMD_CACHE: "CACHE",
             CMD_WRITE_ZEROES: "WRITE_ZEROES",
             CMD_BLOCK_STATUS: "BLOCK_STATUS"}
    return names.get(cmd, "command 0x%x" % cmd)


def err_name(err):
    return ERROR_NAMES.get(err, str(err))


class Conn:
    """One raw connection to an NBD server on a Unix socket."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.size = None
        self.tflags = None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Bytes on the wire.

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        """Read exactly n bytes; raise Closed on EOF or reset."""
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError:
                raise Closed("connection reset after %d of %d bytes"
                             % (len(buf), n))
            if not chunk:
                raise Closed("EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def wait_closed(self, limit=1 << 20):
        """Wait (up to the socket timeout) for the server to close.

        Anything the server sends first is read and returned (at most
        limit bytes).  Raises socket.timeout if it stays open."""
        got = bytearray()
        while len(got) <= limit:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk
        raise ProtocolError("server sent over %d bytes instead of closing"
                            % limit)

    # Handshake phase.

    def greeting(self):
        """Read the server's newstyle greeting; return its handshake flags."""
        magic, opt_magic, hflags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != NBDMAGIC:
            raise ProtocolError("bad greeting magic 0x%x" % magic)
        if opt_magic == OLDSTYLE_MAGIC:
            raise ProtocolError("server uses oldstyle negotiation")
        if opt_magic != IHAVEOPT:
            raise ProtocolError("bad greeting option magic 0x%x" % opt_magic)
        return hflags

    def handshake(self, cflags=FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES):
        """Greeting plus our client flags.  Returns the handshake flags."""
        hflags = self.greeting()
        if not hflags & FLAG_FIXED_NEWSTYLE:
            raise ProtocolError("server is not fixed newstyle")
        self.send(struct.pack(">I", cflags))
        return hflags

    def send_option(self, opt, data=b"", length=None, magic=IHAVEOPT):
        """Send an option header and data; length defaults to len(data)."""
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", magic, opt, length) + data)

    def recv_option_reply(self):
        """Return (option, reply type, data) of one option reply."""
        magic, opt, rep, length = struct.unpack(">QIII", self.recv_exact(20))
        if magic != OPT_REPLY_MAGIC:
            raise ProtocolError("bad option reply magic 0x%x" % magic)
        if length > 64 << 20:
            raise ProtocolError("option reply length %d too big" % length)
        return opt, rep, self.recv_exact(length)

    def go(self, name=b""):
        """NBD_OPT_GO with no info requests.

        Returns (option, reply type, data) of the first error reply, or None
        on success, after which self.size and self.tflags are set."""
        self.send_option(OPT_GO, struct.pack(">I", len(name)) + name +
                         struct.pack(">H", 0))
        while True:
            opt, rep, data = self.recv_option_reply()
            if opt != OPT_GO:
                raise ProtocolError("reply for option %d, expected GO" % opt)
            if rep & REP_ERR_BIT:
                return opt, rep, data
            if rep == REP_ACK:
                if self.size is None:
                    raise ProtocolError("GO acked without NBD_INFO_EXPORT")
                return None
            if rep != REP_INFO:
                raise ProtocolError("unexpected GO reply %s" % rep_name(rep))
            if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == \
                    INFO_EXPORT:
                if len(data) != 12:
                    raise ProtocolError("NBD_INFO_EXPORT length %d"
                                        % len(data))
                self.size, self.tflags = struct.unpack(">QH", data[2:])

    def open(self, name=b""):
        """Handshake and GO in one step; raise if GO fails."""
        self.handshake()
        err = self.go(name)
        if err is not None:
            raise ProtocolError("NBD_OPT_GO failed: %s" % rep_name(err[1]))
        return self

    # Transmission phase (simple replies only: we never negotiate
    # structured replies).

    def send_request(self, cmd, offset=0, length=0, handle=1, flags=0,
                     payload=b"", magic=REQUEST_MAGIC):
        self.send(struct.pack(">IHHQQI", magic, flags, cmd, handle,
                              offset & (2**64 - 1), length) + payload)

    def recv_reply(self, read_length=0):
        """Read one simple reply.  Returns (error, handle, data); data is
        read_length bytes when error == 0, else empty."""
        magic, error, handle = struct.unpack(">IIQ", self.recv_exact(16))
        if magic != SIMPLE_REPLY_MAGIC:
            raise ProtocolError("bad reply magic 0x%x" % magic)
        data = self.recv_exact(read_length) if error == 0 else b""
        return error, handle, data

    def request(self, cmd, offset=0, length=0, handle=1, payload=b"",
                read_length=0):
        """Send one request, wait for its reply, check the handle."""
        self.send_request(cmd, offset, length, handle, payload=payload)
        error, rhandle, data = self.recv_reply(read_length)
        if rhandle != handle:
            raise ProtocolError("reply handle 0x%x, expected 0x%x"
                                % (rhandle, handle))
        return error, data

    def read(self, offset, length, handle=1):
        return self.request(CMD_READ, offset, length, handle,
                            read_length=length)
