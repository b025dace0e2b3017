#!/usr/bin/python3
"""sink.py - a raw-socket HTTP sink that reports the exact request bytes it received.

Usage: sink.py PORT. One connection at a time; a small receive buffer and a pause before reading make the
client's non-blocking writes come back partial and with EAGAIN. It reads the header block and a
Content-Length body and answers 200 with one JSON line: {"head": the header block as received (latin-1),
"len": body bytes, "sha256": hex digest of the body}, then closes.
"""
import hashlib
import json
import socket
import sys
import time


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            return None
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    digest = hashlib.sha256(rest)
    got = len(rest)
    while got < length:
        chunk = conn.recv(min(65536, length - got))
        if not chunk:
            break
        digest.update(chunk)
        got += len(chunk)
    return {"head": head.decode("latin-1") + "\r\n\r\n", "len": got, "sha256": digest.hexdigest()}


def serve(conn):
    time.sleep(0.3)
    report = read_request(conn)
    if report is None:
        return
    body = (json.dumps(report) + "\n").encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


def main():
    lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lsn.bind(("127.0.0.1", int(sys.argv[1])))
    lsn.listen(16)
    while True:
        conn, _ = lsn.accept()
        try:
            serve(conn)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
