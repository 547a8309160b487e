#!/usr/bin/env python3
"""What this machine's kernel allows any server or relay, for the benchmarks to print beside
Quayside's numbers. Loopback only.

  floor.py serve FILE PORT        answers every request with FILE, by one sendfile(2) loop
  floor.py relay PORT UPSTREAM    relays each connection to 127.0.0.1:UPSTREAM: the request is
                                  copied once, the answer spliced through a 1 MiB pipe until the
                                  upstream closes (so clients send `Connection: close`)

Neither parses HTTP beyond what it must: no user-space work is left but the syscalls, so what
they cost is the kernel's share of a pull, which no server design avoids.
"""
import fcntl
import os
import socket
import sys
import threading

F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20


def listen(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    return srv


def serve(path, port):
    size = os.path.getsize(path)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size

    def answer(conn):
        with conn, open(path, "rb") as f:
            conn.recv(65536)
            conn.sendall(head)
            at = 0
            while at < size:
                at += os.sendfile(conn.fileno(), f.fileno(), at, size - at)

    accept(listen(port), answer)


def relay(port, upstream):
    def answer(conn):
        with conn, socket.create_connection(("127.0.0.1", upstream)) as up:
            up.sendall(conn.recv(65536))
            r, w = os.pipe()
            try:
                fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_BYTES)
                while n := os.splice(up.fileno(), w, PIPE_BYTES):
                    while n:
                        n -= os.splice(r, conn.fileno(), n)
            finally:
                os.close(r)
                os.close(w)

    accept(listen(port), answer)


def accept(srv, answer):
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=answer, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "serve":
        serve(args[0], int(args[1]))
    elif mode == "relay":
        relay(int(args[0]), int(args[1]))
    else:
        sys.exit(f"floor.py: unknown mode {mode!r} (serve FILE PORT | relay PORT UPSTREAM)")
