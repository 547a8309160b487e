#!/usr/bin/env python3
"""Misbehaving clients against one registry, while a well-behaved client measures manifest GETs.

usage: hostile_load.py HOST:PORT SCENARIO COUNT REPO DIGEST SECONDS
SCENARIO: stalled (GET the blob, never read), trickle (PATCH 1 byte every 5 s of a declared
1000000), silent (connect, send nothing). Prints one line: p50 p99 failures opened open (ms, ms, counts)
of the well-behaved client's manifest GETs (a new connection each, 10 s timeout), then how many
misbehaving connections were opened and how many the server still held open at the end.
Traffic goes to the loopback address given only; every loop is bounded in count and time.
"""
import socket, statistics, sys, threading, time

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
scenario, count, repo, digest, seconds = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6])
assert host.startswith("127."), "loopback only"
stop = time.monotonic() + seconds + 30
held = []


def connect():
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return s


def open_bad():
    for _ in range(count):
        try:
            s = connect()
            if scenario == "stalled":
                s.sendall(f"GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
            elif scenario == "trickle":
                s.sendall(f"POST /v2/{repo}/blobs/uploads/ HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n".encode())
                head = s.recv(4096).decode(errors="replace")
                loc = next((l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("location:")), None)
                if loc is None:
                    s.close()
                    continue
                s.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: r\r\nContent-Length: 1000000\r\n\r\n".encode())
            held.append(s)
        except OSError:
            pass


def trickle():
    while scenario == "trickle" and time.monotonic() < stop:
        for s in list(held):
            try:
                s.send(b"x")
            except OSError:
                held.remove(s)
        time.sleep(5)


opener = threading.Thread(target=open_bad, daemon=True)
opener.start()
threading.Thread(target=trickle, daemon=True).start()
opener.join(timeout=60)
time.sleep(1)
latencies, failures = [], 0
end = time.monotonic() + seconds
request = f"GET /v2/{repo}/manifests/v1 HTTP/1.1\r\nHost: r\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n".encode()
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        with connect() as s:
            s.sendall(request)
            answer = s.recv(64)
            if not answer.startswith(b"HTTP/1.1 200"):
                raise OSError(answer[:12])
        latencies.append((time.monotonic() - t0) * 1000)
    except OSError:
        failures += 1
    time.sleep(0.05)
def still_open(s):
    """Drains what the server sent; open if it then has nothing more to say, closed on EOF."""
    s.setblocking(False)
    try:
        for _ in range(256):
            if not s.recv(65536):
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    return True


open_at_end = sum(still_open(s) for s in held)
if latencies:
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{statistics.median(latencies):.1f} {p99:.1f} {failures} {len(held)} {open_at_end}")
else:
    print(f"- - {failures} {len(held)} {open_at_end}")
for s in held:
    s.close()
