#!/usr/bin/python3
# Generate fuzz/corpus/: whole NBD client sessions (the bytes a client
# sends), valid and invalid, as seeds for fuzz-nbd and as replay cases for
# tests/unit-nbd-replay.  Written from the NBD protocol (doc/proto.md); the
# fuzz server has one export, "", of 1 MiB on a memory backend.
#
# usage: fuzz/make-corpus.py [OUTDIR]     (default: the corpus next to us)
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
C_FIXED_NEWSTYLE, C_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10
OPT_EXTENDED_HEADERS = 11
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3
REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZERO, BLOCK_STATUS = range(8)
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO, PAYLOAD_LEN = 1, 2, 4, 8, 16, 32
M = 1 << 20
SIZE = M


def flags(f=C_FIXED_NEWSTYLE | C_NO_ZEROES):
    return struct.pack(">I", f)


def opt(o, data=b"", length=None, magic=IHAVEOPT):
    return struct.pack(">QII", magic, o,
                       len(data) if length is None else length) + data


def name_and_infos(name=b"", infos=()):
    return (struct.pack(">I", len(name)) + name +
            struct.pack(">H", len(infos)) +
            b"".join(struct.pack(">H", i) for i in infos))


def go(name=b"", infos=()):
    return opt(OPT_GO, name_and_infos(name, infos))


def meta(o, queries, name=b""):
    return opt(o, struct.pack(">I", len(name)) + name +
               struct.pack(">I", len(queries)) +
               b"".join(struct.pack(">I", len(q)) + q for q in queries))


def req(cmd, offset=0, length=0, flags=0, handle=1, payload=b"",
        magic=REQUEST_MAGIC):
    return struct.pack(">IHHQQI", magic, flags, cmd, handle,
                       offset & (2**64 - 1), length) + payload


def write(offset, length, flags=0, handle=1, byte=0xA5):
    return req(WRITE, offset, length, flags, handle, bytes([byte]) * length)


def xreq(cmd, offset=0, length=0, flags=0, handle=1, payload=b"",
         magic=EXT_REQUEST_MAGIC):
    """An extended (32-byte) request: 64-bit length."""
    return struct.pack(">IHHQQQ", magic, flags, cmd, handle,
                       offset & (2**64 - 1), length & (2**64 - 1)) + payload


def xwrite(offset, length, flags=PAYLOAD_LEN, handle=1, byte=0x5A):
    return xreq(WRITE, offset, length, flags, handle, bytes([byte]) * length)


HS = flags()
HS_SR = HS + opt(OPT_STRUCTURED_REPLY) + \
    meta(OPT_SET_META_CONTEXT, [b"base:allocation"])
GO = HS + go()
GO_SR = HS_SR + go()
DISC_ = req(DISC)
HS_EXT = HS + opt(OPT_EXTENDED_HEADERS) + \
    meta(OPT_SET_META_CONTEXT, [b"base:allocation"])
GO_EXT = HS_EXT + go()
XDISC = xreq(DISC)

IO = (write(0, 4096, handle=1) + req(READ, 0, 4096, handle=2) +
      write(4095, 3, FUA, handle=3) + req(FLUSH, handle=4) +
      req(TRIM, 8192, 8192, handle=5) + req(ZERO, 65536, 4096, handle=6) +
      req(ZERO, 0, 512, NO_HOLE | FUA, handle=7) + req(CACHE, 0, 4096, handle=8))

SESSIONS = {
    # Option negotiation.
    "hs-only": HS,
    "hs-no-zeroes-off": flags(C_FIXED_NEWSTYLE) + go() + DISC_,
    "hs-bad-flags": flags(0) + go(),
    "hs-unknown-flags": flags(C_FIXED_NEWSTYLE | 0x80),
    "opt-bad-magic": HS + opt(OPT_GO, name_and_infos(), magic=0x1234),
    "opt-list": HS + opt(OPT_LIST) + opt(OPT_ABORT),
    "opt-list-with-data": HS + opt(OPT_LIST, b"x") + opt(OPT_ABORT),
    "opt-info": HS + opt(OPT_INFO, name_and_infos(
        b"", (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE))) + opt(OPT_ABORT),
    "opt-info-unknown-export": HS + opt(OPT_INFO, name_and_infos(b"nope")),
    "opt-info-malformed": HS + opt(OPT_INFO, b"\0\0\0\x09abc") +
        opt(OPT_INFO, b"\0\0"),
    "opt-go-infos": HS + go(b"", (INFO_BLOCK_SIZE, INFO_NAME, 99)) +
        req(READ, 0, 512) + DISC_,
    "opt-export-name": HS + opt(OPT_EXPORT_NAME) + req(READ, 0, 512) + DISC_,
    "opt-export-name-zeroes": flags(C_FIXED_NEWSTYLE) + opt(OPT_EXPORT_NAME) +
        req(READ, 0, 512) + DISC_,
    "opt-export-name-unknown": HS + opt(OPT_EXPORT_NAME, b"nope"),
    "opt-abort": HS + opt(OPT_ABORT),
    "opt-starttls": HS + opt(OPT_STARTTLS) + opt(OPT_ABORT),
    "opt-unknown": HS + opt(42, b"abcd") + opt(0x7fffffff) + opt(OPT_ABORT),
    "opt-too-big": HS + opt(OPT_LIST, b"\0" * 9000) + opt(OPT_ABORT),
    "opt-too-big-unknown": HS + opt(77, b"\0" * 9000) + opt(OPT_ABORT),
    "opt-huge-length": HS + opt(OPT_GO, length=0xFFFFFFFF),
    "opt-truncated": HS + opt(OPT_GO, length=100) + b"\0" * 10,
    "opt-structured-with-data": HS + opt(OPT_STRUCTURED_REPLY, b"x") +
        opt(OPT_ABORT),
    "meta-list-all": HS_SR + meta(OPT_LIST_META_CONTEXT, []) +
        meta(OPT_LIST_META_CONTEXT, [b"base:"]) + opt(OPT_ABORT),
    "meta-without-sr": HS + meta(OPT_SET_META_CONTEXT, [b"base:allocation"]) +
        go() + req(BLOCK_STATUS, 0, SIZE) + DISC_,
    "meta-unknown": HS + opt(OPT_STRUCTURED_REPLY) +
        meta(OPT_SET_META_CONTEXT, [b"qemu:dirty-bitmap:x", b"base:"]) +
        opt(OPT_ABORT),
    "meta-malformed": HS + opt(OPT_STRUCTURED_REPLY) +
        opt(OPT_SET_META_CONTEXT, b"\0\0\0\0\0\0\0\x02\0\0\0\x40ab") +
        opt(OPT_SET_META_CONTEXT, b"\0\0\0\0\0\0\0\0zz") + opt(OPT_ABORT),
    "meta-other-export": HS + opt(OPT_STRUCTURED_REPLY) +
        meta(OPT_SET_META_CONTEXT, [b"base:allocation"], b"nope") +
        opt(OPT_ABORT),
    # Transmission, simple replies.
    "io-simple": GO + IO + DISC_,
    "io-simple-pipelined": GO + b"".join(
        req(READ, i * 4096, 4096, handle=i) for i in range(16)) + DISC_,
    "io-simple-large": GO + write(0, 40000) + req(READ, 0, 100000) + DISC_,
    "io-simple-eof-mid-write": GO + req(WRITE, 0, 40000) + b"\xff" * 20000,
    "io-simple-eof-mid-header": GO + req(READ, 0, 512)[:13],
    "io-no-disc": GO + IO,
    # Transmission, structured replies.
    "io-structured": GO_SR + IO + req(BLOCK_STATUS, 0, SIZE, handle=9) +
        req(BLOCK_STATUS, 0, SIZE, REQ_ONE, handle=10) + DISC_,
    "io-structured-large": GO_SR + write(0, 50000) +
        req(READ, 0, 100000, handle=2) + req(READ, 0, 100000, DF, handle=3) +
        DISC_,
    "io-structured-fast-zero": GO_SR + req(ZERO, 0, 8192, FAST_ZERO) +
        req(ZERO, 0, 8192, FAST_ZERO | NO_HOLE) + DISC_,
    # Bad requests.
    "req-bad-magic": GO + req(READ, magic=0xdeadbeef),
    "req-unknown-cmd": GO + req(99, 0, 512) + req(0xffff) + DISC_,
    "req-bad-flags": GO + req(READ, 0, 512, 0x8000) + req(READ, 0, 512, DF) +
        req(FLUSH, 0, 512) + req(BLOCK_STATUS, 0, 512) + DISC_,
    "req-out-of-range": GO + req(READ, SIZE, 512) + req(READ, 2**64 - 512, 1024) +
        write(SIZE - 256, 512) + req(TRIM, 0, SIZE + 1) +
        req(ZERO, 2**63, 2**31) + req(READ, 0, 0) + DISC_,
    "req-too-large": GO + req(READ, 0, 33 * M) + req(WRITE, 0, 64 * M + 1),
    "req-write-rejected-drain": GO + write(SIZE, 20000) + req(READ, 0, 512) +
        DISC_,
    "req-after-disc": GO + DISC_ + req(READ, 0, 512) + b"garbage",
    "req-during-handshake": HS + req(READ, 0, 512),
    # Extended headers.
    "ext-opts": HS + opt(OPT_EXTENDED_HEADERS, b"x") +
        opt(OPT_EXTENDED_HEADERS) + opt(OPT_EXTENDED_HEADERS) +
        opt(OPT_STRUCTURED_REPLY) + opt(OPT_EXPORT_NAME),
    "ext-after-sr": HS_SR + opt(OPT_EXTENDED_HEADERS) + go() +
        xreq(READ, 0, 4096) + XDISC,
    "ext-io": GO_EXT + xwrite(0, 4096) + xreq(READ, 0, 4096, handle=2) +
        xwrite(4095, 3, PAYLOAD_LEN | FUA, handle=3) +
        xreq(FLUSH, handle=4) + xreq(TRIM, 8192, 8192, handle=5) +
        xreq(ZERO, 65536, 4096, handle=6) + xreq(CACHE, 0, SIZE, handle=7) +
        xreq(BLOCK_STATUS, 0, SIZE, handle=8) +
        xreq(BLOCK_STATUS, 0, 2**40, REQ_ONE, handle=9) + XDISC,
    "ext-io-large": GO_EXT + xwrite(0, 50000) +
        xreq(READ, 0, 100000, handle=2) + xreq(READ, 0, 100000, DF, handle=3) +
        XDISC,
    "ext-payload-rules": GO_EXT + xreq(WRITE, 0, 4096) +
        xreq(READ, 0, 100, PAYLOAD_LEN, payload=b"\x11" * 100) +
        xreq(99, 0, 10, PAYLOAD_LEN, payload=b"\x22" * 10) +
        xreq(TRIM, 0, 2**63) + xreq(READ, 0, 2**33) + XDISC,
    "ext-payload-too-big": GO_EXT + xreq(WRITE, 0, 2**32 + 1, PAYLOAD_LEN),
    "ext-compact-request": GO_EXT + req(READ, 0, 512) + b"\0" * 4,
    "ext-bad-magic": GO_EXT + xreq(READ, magic=0xdeadbeef),
    "ext-eof-mid-write": GO_EXT + xreq(WRITE, 0, 40000, PAYLOAD_LEN) +
        b"\xff" * 20000,
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(SESSIONS.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d sessions in %s" % (len(SESSIONS), out))


main()
