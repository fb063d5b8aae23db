#!/usr/bin/env python3
"""Memory per idle danmaku WebSocket over plain WS and over WSS, side by side.

Opens N connections to one room on a running liveshard (each answered with its `history`
frame, then left idle), and prints the server's RSS growth per connection. Python's own
ssl module is the TLS client, so nothing beyond python3 is needed.

    liveshard serve --shards 1 --https 127.0.0.1:0 \
        --set server.tls_cert=cert.pem --set server.tls_key=key.pem &
    bench/ws-idle-tls.py --pid $! --ws 127.0.0.1:HTTP --wss 127.0.0.1:HTTPS --ca cert.pem -n 2000

Run WSS first or in a fresh server each time: memory the first run frees is reused by
the next, which then shows less growth than it costs.
"""
import argparse
import base64
import os
import socket
import ssl
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no process {pid}")


def open_idle(addr, n, ctx):
    host, port = addr.rsplit(":", 1)
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        if ctx:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                "GET /ws?room=idle HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: " + key + "\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        got = b""
        while b"history" not in got:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("the server closed a connection before its history frame")
            got += chunk
        socks.append(s)
    return socks


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pid", type=int, required=True, help="the server's process id")
    p.add_argument("--ws", help="HTTP address (host:port) for plain WebSocket")
    p.add_argument("--wss", help="HTTPS address (host:port) for WebSocket over TLS")
    p.add_argument("--ca", help="the CA (or self-signed certificate) to trust for --wss")
    p.add_argument("-n", type=int, default=2000, help="connections per kind")
    a = p.parse_args()
    runs = []
    if a.wss:
        ctx = ssl.create_default_context(cafile=a.ca)
        ctx.check_hostname = False
        runs.append(("wss", a.wss, ctx))
    if a.ws:
        runs.append(("ws", a.ws, None))
    for kind, addr, ctx in runs:
        base = rss(a.pid)
        socks = open_idle(addr, a.n, ctx)
        time.sleep(2)
        grown = rss(a.pid) - base
        print(f"{kind:3} {a.n} idle connections: server RSS +{grown / 1e6:.1f} MB, "
              f"{grown / a.n:.0f} B per connection")
        for s in socks:
            s.close()


if __name__ == "__main__":
    main()
