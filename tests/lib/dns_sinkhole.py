#!/usr/bin/env python3
"""A DNS server that answers "no such name" (NXDOMAIN) to every question, as a filtering or
captive resolver does, or a machine whose only resolver has no upstream.

  dns_sinkhole.py HOST PORT READY_FILE

Answers over UDP on HOST:PORT, creates READY_FILE once listening, and exits when its parent
process does (it is started in a test's network namespace and must not outlive it)."""
import os
import socket
import struct
import sys


def answer(query):
    """The NXDOMAIN reply to one query: same id and question, no records."""
    if len(query) < 12:
        return None
    qid, flags = struct.unpack("!HH", query[:4])
    rd = flags & 0x0100
    # QR=1, opcode copied, RD copied, RA=1, RCODE=3 (NXDOMAIN); one question, nothing else
    reply_flags = 0x8000 | (flags & 0x7800) | rd | 0x0080 | 3
    end = 12
    while end < len(query) and query[end]:
        end += 1 + query[end]
    question = query[12:end + 5]
    return struct.pack("!HHHHHH", qid, reply_flags, 1, 0, 0, 0) + question


def main():
    host, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    parent = os.getppid()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    s.settimeout(0.2)
    open(ready, "w").close()
    while os.getppid() == parent:
        try:
            query, peer = s.recvfrom(4096)
        except socket.timeout:
            continue
        reply = answer(query)
        if reply:
            s.sendto(reply, peer)


if __name__ == "__main__":
    main()
