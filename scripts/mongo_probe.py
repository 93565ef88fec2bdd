#!/usr/bin/env python3
"""Speaks just enough of the MongoDB wire protocol (OP_MSG) to ask a server
for `ping` or `buildInfo`, so scripts/stack needs no Mongo shell.

usage: mongo_probe.py HOST PORT ping|version
"""
import socket
import struct
import sys


def bson_doc(pairs):
    body = b""
    for key, value in pairs:
        k = key.encode() + b"\x00"
        if isinstance(value, int):
            body += b"\x10" + k + struct.pack("<i", value)
        else:
            v = value.encode() + b"\x00"
            body += b"\x02" + k + struct.pack("<i", len(v)) + v
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def command(host, port, name):
    doc = bson_doc([(name, 1), ("$db", "admin")])
    payload = struct.pack("<I", 0) + b"\x00" + doc
    header = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013)
    with socket.create_connection((host, port), timeout=3) as sock:
        sock.sendall(header + payload)
        data = b""
        while len(data) < 4 or len(data) < struct.unpack("<i", data[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            data += chunk
    return data[21:]  # header (16) + flags (4) + section kind (1)


def field(doc, key):
    """Returns a top-level string or double field of a BSON document."""
    i = 4
    while i < len(doc) - 1:
        kind = doc[i]
        end = doc.index(b"\x00", i + 1)
        name = doc[i + 1:end].decode()
        i = end + 1
        if kind == 0x01:
            value, size = struct.unpack("<d", doc[i:i + 8])[0], 8
        elif kind == 0x02:
            n = struct.unpack("<i", doc[i:i + 4])[0]
            value, size = doc[i + 4:i + 3 + n].decode(), 4 + n
        elif kind in (0x03, 0x04):
            value, size = None, struct.unpack("<i", doc[i:i + 4])[0]
        elif kind == 0x10:
            value, size = struct.unpack("<i", doc[i:i + 4])[0], 4
        elif kind in (0x12, 0x09, 0x11):
            value, size = None, 8
        elif kind == 0x08:
            value, size = doc[i] == 1, 1
        elif kind == 0x0A:
            value, size = None, 0
        else:
            return None
        if name == key:
            return value
        i += size
    return None


def main():
    host, port, what = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    try:
        if what == "ping":
            ok = field(command(host, port, "ping"), "ok")
            if ok != 1.0:
                sys.exit("ping answered ok=%r" % ok)
            print("ok")
        else:
            doc = command(host, port, "buildInfo")
            version = field(doc, "version")
            ferret = field(doc, "ferretdbVersion")
            print(f"MongoDB wire {version}" + (f" (FerretDB {ferret})" if ferret else ""))
    except (OSError, ValueError) as e:
        sys.exit(f"no answer from {host}:{port}: {e}")


if __name__ == "__main__":
    main()
