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
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11
OPT_REPLY_MAGIC = 0x3E889045565A9
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_BIT = 1 << 31
REP_ERR_UNSUP = REP_ERR_BIT | 1
REP_ERR_POLICY = REP_ERR_BIT | 2
REP_ERR_INVALID = REP_ERR_BIT | 3
REP_ERR_TLS_REQD = REP_ERR_BIT | 5
REP_ERR_UNKNOWN = REP_ERR_BIT | 6
REP_ERR_TOO_BIG = REP_ERR_BIT | 9
REP_ERR_EXT_HEADER_REQD = REP_ERR_BIT | 10
INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

# Transmission flags (from NBD_INFO_EXPORT).
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3

# Requests and simple replies.
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
EXT_REQUEST_MAGIC = 0x21E41C71          # extended headers
STRUCTURED_REPLY_MAGIC = 0x668E33EF
EXTENDED_REPLY_MAGIC = 0x6E8A278C
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_PAYLOAD_LEN = 1 << 5
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_BLOCK_STATUS_EXT = 6
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2
STATE_HOLE, STATE_ZERO = 1, 2
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
             REP_ERR_TLS_REQD: "ERR_TLS_REQD",
             REP_ERR_UNKNOWN: "ERR_UNKNOWN", REP_ERR_TOO_BIG: "ERR_TOO_BIG",
             REP_ERR_EXT_HEADER_REQD: "ERR_EXT_HEADER_REQD"}
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
    """One raw connection to an NBD server on a Unix socket (path) or
    over TCP ((host, port))."""

    def __init__(self, path, timeout=10.0):
        if isinstance(path, tuple):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.size = None
        self.tflags = None
        self.block_size = None          # (minimum, preferred, maximum)
        self.structured = False         # chunks instead of simple replies
        self.extended = False           # 32-byte headers, 64-bit lengths

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

    def option(self, opt, data=b""):
        """Send an option that has one reply; return (reply type, data)
        and remember the header style it agreed on."""
        self.send_option(opt, data)
        ropt, rep, rdata = self.recv_option_reply()
        if ropt != opt:
            raise ProtocolError("reply for option %d, expected %d"
                                % (ropt, opt))
        if rep == REP_ACK and opt == OPT_STRUCTURED_REPLY:
            self.structured = True
        if rep == REP_ACK and opt == OPT_EXTENDED_HEADERS:
            self.structured = self.extended = True
        return rep, rdata

    def starttls(self, context, hostname="localhost"):
        """NBD_OPT_STARTTLS, then the TLS handshake with an ssl.SSLContext:
        everything after goes through TLS.  Returns the reply type; the
        handshake is done only on NBD_REP_ACK."""
        rep, _ = self.option(OPT_STARTTLS)
        if rep == REP_ACK:
            self.sock = context.wrap_socket(self.sock,
                                            server_hostname=hostname)
        return rep

    def set_meta_context(self, queries, name=b""):
        """NBD_OPT_SET_META_CONTEXT; returns ([(id, name)], final reply)."""
        self.send_option(OPT_SET_META_CONTEXT, struct.pack(">I", len(name)) +
                         name + struct.pack(">I", len(queries)) +
                         b"".join(struct.pack(">I", len(q)) + q
                                  for q in queries))
        contexts = []
        while True:
            _, rep, data = self.recv_option_reply()
            if rep != REP_META_CONTEXT:
                return contexts, rep
            contexts.append((struct.unpack(">I", data[:4])[0], data[4:]))

    def go(self, name=b"", infos=()):
        """NBD_OPT_GO asking for the given NBD_INFO types.

        Returns (option, reply type, data) of the first error reply, or None
        on success, after which self.size and self.tflags (and
        self.block_size if the server sent it) are set."""
        self.send_option(OPT_GO, struct.pack(">I", len(name)) + name +
                         struct.pack(">H", len(infos)) +
                         b"".join(struct.pack(">H", i) for i in infos))
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
            elif len(data) == 14 and struct.unpack(">H", data[:2])[0] == \
                    INFO_BLOCK_SIZE:
                self.block_size = struct.unpack(">III", data[2:])

    def export_name(self, name=b"", no_zeroes=True):
        """NBD_OPT_EXPORT_NAME: the old way into transmission (simple
        replies).  Sets size and tflags."""
        self.send_option(OPT_EXPORT_NAME, name)
        data = self.recv_exact(10 if no_zeroes else 134)
        self.size, self.tflags = struct.unpack(">QH", data[:10])
        return self

    def open(self, name=b""):
        """Handshake and GO in one step; raise if GO fails."""
        self.handshake()
        err = self.go(name)
        if err is not None:
            raise ProtocolError("NBD_OPT_GO failed: %s" % rep_name(err[1]))
        return self

    # Transmission phase.  Requests use the negotiated header style;
    # recv_reply reads simple replies, recv_chunk structured or extended
    # reply chunks.

    def send_request(self, cmd, offset=0, length=0, handle=1, flags=0,
                     payload=b"", magic=None, extended=None):
        """extended (default: as negotiated) picks the 32-byte header."""
        if extended is None:
            extended = self.extended
        if extended:
            hdr = struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC
                              if magic is None else magic, flags, cmd,
                              handle, offset & (2**64 - 1), length)
        else:
            hdr = struct.pack(">IHHQQI", REQUEST_MAGIC
                              if magic is None else magic, flags, cmd,
                              handle, offset & (2**64 - 1), length)
        self.send(hdr + payload)

    def recv_chunk(self):
        """Read one reply chunk of the negotiated style.  Returns a dict
        with flags, type, handle, offset (extended headers only, else
        None) and payload."""
        if self.extended:
            magic, flags, rtype, handle, offset, length = \
                struct.unpack(">IHHQQQ", self.recv_exact(32))
            want = EXTENDED_REPLY_MAGIC
        else:
            magic, flags, rtype, handle, length = \
                struct.unpack(">IHHQI", self.recv_exact(20))
            offset, want = None, STRUCTURED_REPLY_MAGIC
        if magic != want:
            raise ProtocolError("reply magic 0x%x, expected 0x%x"
                                % (magic, want))
        if length > 64 << 20:
            raise ProtocolError("chunk length %d too big" % length)
        return {"flags": flags, "type": rtype, "handle": handle,
                "offset": offset, "payload": self.recv_exact(length)}

    def recv_chunks(self, handle):
        """All chunks of one reply, up to the one flagged DONE."""
        chunks = []
        while True:
            ch = self.recv_chunk()
            if ch["handle"] != handle:
                raise ProtocolError("chunk for handle 0x%x, expected 0x%x"
                                    % (ch["handle"], handle))
            chunks.append(ch)
            if ch["flags"] & REPLY_FLAG_DONE:
                return chunks

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

    def read_chunks(self, offset, length, handle=1, flags=0):
        """A read with chunked replies: returns (error, data, chunks) where
        data is assembled from OFFSET_DATA and OFFSET_HOLE chunks, which
        must cover the range exactly once."""
        self.send_request(CMD_READ, offset, length, handle, flags)
        chunks = self.recv_chunks(handle)
        return assemble_read(offset, length, chunks) + (chunks,)


def chunk_error(ch):
    """The NBD error of an error chunk (0 for other chunks)."""
    if not ch["type"] & (1 << 15):
        return 0
    return struct.unpack(">I", ch["payload"][:4])[0]


def assemble_read(offset, length, chunks):
    """(error, data) of a read's chunks; raises ProtocolError if content
    chunks overlap, fall outside the range or leave part of it out."""
    data = bytearray(length)
    covered = []
    for ch in chunks:
        if chunk_error(ch):
            return chunk_error(ch), b""
        if ch["type"] == REPLY_TYPE_OFFSET_DATA:
            start = struct.unpack(">Q", ch["payload"][:8])[0]
            piece = ch["payload"][8:]
            data[start - offset:start - offset + len(piece)] = piece
            n = len(piece)
        elif ch["type"] == REPLY_TYPE_OFFSET_HOLE:
            start, n = struct.unpack(">QI", ch["payload"])
        elif ch["type"] == REPLY_TYPE_NONE:
            continue
        else:
            raise ProtocolError("read reply chunk of type %d" % ch["type"])
        if n == 0 or start < offset or start + n > offset + length:
            raise ProtocolError("chunk %d+%d outside read %d+%d"
                                % (start, n, offset, length))
        covered.append((start, n))
    pos = offset
    for start, n in sorted(covered):
        if start != pos:
            raise ProtocolError("read chunks %s do not tile %d+%d"
                                % (sorted(covered), offset, length))
        pos += n
    if pos != offset + length:
        raise ProtocolError("read chunks %s do not cover %d+%d"
                            % (sorted(covered), offset, length))
    return 0, bytes(data)
