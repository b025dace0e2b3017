#!/usr/bin/python3
"""twothreads.py - one keep-alive connection used by two threads at once.

Usage: twothreads.py PORT N. A writer thread sends GET /tt/0 .. /tt/N-1 (pipelined, at most 3
unanswered) while a reader thread reads the responses on the same socket; prints "STATUS PATH" for
each response read, in order. Under the shim this is a reader and a writer on one fd, with the
connection going idle (reader caught up) and busy again (writer's next request) all along.
"""
import json
import socket
import sys
import threading


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    s = socket.create_connection(("127.0.0.1", port))
    room = threading.Semaphore(3)

    def writer():
        for i in range(n):
            room.acquire()
            s.sendall(b"GET /tt/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % i)

    w = threading.Thread(target=writer)
    w.start()
    f = s.makefile("rb")
    for _ in range(n):
        status = f.readline().split()[1].decode()
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        print(status, json.loads(f.read(length))["path"], flush=True)
        room.release()
    w.join()
    s.close()


if __name__ == "__main__":
    main()
