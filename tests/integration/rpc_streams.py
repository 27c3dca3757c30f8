#!/usr/bin/python3
"""rpc_streams.py: the bridge's stream count per connection (rpc/bridge.c call_count).

    rpc_streams.py RPC_ECHO_SERVER

The server advertises SETTINGS_MAX_CONCURRENT_STREAMS = LY_RPC_STREAMS_MAX
(100); gRPC 1.51 enforces it only once the client acknowledged our SETTINGS,
so the bridge counts calls per connection and shuts down a connection over
LY_RPC_STREAMS_KILL (200). It counts a call until the call's completion
reaches the loop, which lags the stream's end on the wire. Against
rpc_echo_server on a Unix socket whose connections are handed over as fds
(the Workload API's and admin API's shape):

  1. a client that opens 150 streams before it has read our SETTINGS (RFC
     9113 §6.5.2: no limit is in force until then), each with its request,
     then acknowledges them: every stream is served, the connection stays
     open while they are (before the fix: shut down at the 101st, every time);
  2. compliant grpcio clients, several connections, each kept at the
     advertised limit (128 calls in flight: grpcio holds 100 on the wire)
     on /test.Echo/Slow, whose answer is worked out on a libuv worker thread
     and sent from the loop (the admin API on the datastore worker): every
     call succeeds and no connection is shut down. Before the fix the
     bridge saw 101 open calls now and then and shut the connection down
     (about 3 runs in 4 for one round here; the scenario runs two);
  3. a client that never acknowledges our SETTINGS and opens 300 streams:
     its connection is shut down and at most LY_RPC_STREAMS_KILL of its
     streams were served.

Prints ok/FAIL per check and figures; exits 1 on any failure.
"""
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2flood import END_HEADERS, HEADERS, PREFACE, SETTINGS, frame, header_block  # noqa: E402

import grpc  # noqa: E402

SERVER = sys.argv[1]
# lib/caps.h
STREAMS_MAX = 100
STREAMS_KILL = 2 * STREAMS_MAX
DATA, GOAWAY, PING = 0x0, 0x7, 0x6
END_STREAM, ACK = 0x1, 0x1

failures = []
figures = {}


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + (("\n     " + detail) if detail and not cond else ""),
          flush=True)
    if not cond:
        failures.append(what)


class Server:
    def __init__(self, tmp):
        self.sock = os.path.join(tmp, "wl.sock")
        self.err_path = os.path.join(tmp, "server.err")
        self.err = open(self.err_path, "wb")
        # Trusted (as the admin socket is): the memory guard, which sheds connections serving no call yet
        # when memory jumps (ASan's quarantine makes it jump here), is not what this test is about.
        self.proc = subprocess.Popen([SERVER, "--fd-listen", self.sock, "--trusted", "yes"],
                                     stdout=subprocess.PIPE, stderr=self.err)
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode() if r else ""
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError("rpc_echo_server did not start: %r" % line)

    def log(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def kills(self):
        return self.log().count("connection shut down")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.err.close()
        return self.proc.returncode


# ---- 1. compliant clients at the advertised limit --------------------------

def compliant_load(srv, conns, calls, in_flight, ms):
    """`conns` grpcio channels (one connection each), each keeping `in_flight` Slow calls open."""
    codes, lock = {}, threading.Lock()

    def one():
        ch = grpc.insecure_channel("unix:" + srv.sock, options=[("grpc.use_local_subchannel_pool", 1)])
        f = ch.unary_unary("/test.Echo/Slow")
        futs = []

        def done(fut):
            try:
                fut.result()
                c = "OK"
            except grpc.RpcError as e:
                c = e.code().name
            with lock:
                codes[c] = codes.get(c, 0) + 1

        for _ in range(calls):
            futs.append(f.future(str(ms).encode(), timeout=120))
            if len(futs) >= in_flight:
                done(futs.pop(0))
        for fut in futs:
            done(fut)
        ch.close()

    threads = [threading.Thread(target=one) for _ in range(conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes, time.monotonic() - t0


# ---- 2, 3. hand-written HTTP/2 clients -------------------------------------

class RawConn:
    """A plaintext HTTP/2 connection on the Unix socket, frames written by hand (h2flood.py's)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.block = header_block("/test.Echo/Tick", False)
        self.buf = b""
        self.closed = False
        self.data_streams = set()  # streams on which a message arrived
        self.ended = set()         # streams whose trailers arrived
        self.settings_seen = False
        self.goaway = None         # (error code, debug data) when the server sent GOAWAY
        self.opened = 0
        self.open_at_close = None  # streams not ended yet when the connection closed

    def open_streams(self, n, request):
        msg = b"\0" + struct.pack(">I", len(request)) + request  # gRPC's length-prefixed message
        out = bytearray(PREFACE + frame(SETTINGS, 0, 0))
        self.opened = n
        for i in range(n):
            sid = 2 * i + 1
            out += frame(HEADERS, END_HEADERS, sid, self.block) + frame(DATA, END_STREAM, sid, msg)
        self.sock.sendall(bytes(out))

    def read(self, seconds, ack):
        """Reads frames for `seconds` (acknowledging SETTINGS and PINGs when `ack`); False at EOF."""
        end = time.monotonic() + seconds
        while not self.closed and time.monotonic() < end:
            r, _, _ = select.select([self.sock], [], [], max(0.0, end - time.monotonic()))
            if not r:
                continue
            try:
                d = self.sock.recv(65536)
            except OSError:
                d = b""
            if not d:
                self.set_closed()
                break
            self.buf += d
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                sid = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                payload = self.buf[9:9 + length]
                self.buf = self.buf[9 + length:]
                if ftype == SETTINGS and not flags & ACK:
                    self.settings_seen = True
                    if ack:
                        self.sock.sendall(frame(SETTINGS, ACK, 0))
                elif ftype == PING and not flags & ACK and ack:
                    self.sock.sendall(frame(PING, ACK, 0, payload))
                elif ftype == DATA and b"tick" in payload:
                    self.data_streams.add(sid)
                elif ftype == HEADERS and flags & END_STREAM:
                    self.ended.add(sid)
                elif ftype == GOAWAY:
                    self.set_closed()
                    self.goaway = (struct.unpack(">I", payload[4:8])[0], payload[8:].decode(errors="replace"))
        return not self.closed

    def set_closed(self):
        if not self.closed:
            self.closed = True
            self.open_at_close = self.opened - len(self.ended)

    def close(self):
        self.sock.close()


def early_burst(srv, n, hold_ms):
    """n streams before our SETTINGS were read, then acknowledged: all served, connection kept."""
    c = RawConn(srv.sock)
    c.open_streams(n, b"2 %d" % hold_ms)  # "tick 0" at once, "tick 1" after hold_ms, then OK
    kills0 = srv.kills()
    c.read(hold_ms / 1000 * 2 + 3, ack=True)
    res = {"streams": n, "served": len(c.data_streams), "ended": len(c.ended), "closed": c.closed,
           "open_at_close": c.open_at_close, "goaway": c.goaway}
    c.close()
    return res, srv.kills() - kills0


def no_ack_flood(srv, n, hold_ms):
    c = RawConn(srv.sock)
    c.open_streams(n, b"2 %d" % hold_ms)
    kills0 = srv.kills()
    c.read(hold_ms / 1000 + 5, ack=False)
    res = {"streams": n, "served": len(c.data_streams), "closed": c.closed}
    c.close()
    return res, srv.kills() - kills0


def main():
    tmp = tempfile.mkdtemp(prefix="rpcstreams.", dir="/tmp")
    srv = None
    try:
        srv = Server(tmp)
        # 1. Streams opened before our SETTINGS were read (first: the server's memory is at its level).
        res, kills = early_burst(srv, 150, 1500)
        figures["early_burst"] = res
        print("     early burst: %s" % res, flush=True)
        # Kept while they are served (once none is, the memory guard may shed the connection).
        check(res["served"] == 150 and res["ended"] == 150 and res["open_at_close"] in (None, 0) and kills == 0,
              "150 streams opened before our SETTINGS were read: all served, connection kept while they are",
              str(res))

        # 2. Two rounds: the lag is a race (seen in about 3 runs of 4 of one round before the fix).
        for rnd in (1, 2):
            codes, took = compliant_load(srv, conns=4, calls=4000, in_flight=128, ms=1)
            figures["compliant_round%d" % rnd] = {"codes": codes, "seconds": round(took, 2)}
            print("     round %d: %s in %.2f s" % (rnd, codes, took), flush=True)
            check(codes == {"OK": 16000},
                  "compliant: 4 connections x 4,000 Slow calls, 128 in flight each (100 on the wire): "
                  "every call succeeds (round %d)" % rnd,
                  "%s; the server said: %s" % (codes, srv.log()[-1500:]))
        check(srv.kills() == 0, "compliant: no connection shut down",
              "\n".join(l for l in srv.log().splitlines() if "shut down" in l)[-600:])

        # 3. A client that never acknowledges: over LY_RPC_STREAMS_KILL, shut down.
        res, kills = no_ack_flood(srv, 300, 3000)
        figures["no_ack_300"] = res
        print("     no-ack flood: %s" % res, flush=True)
        check(res["closed"], "300 streams, SETTINGS never acknowledged: connection shut down",
              "%s; 'shut down' lines logged: %d" % (res, kills))
        check(res["served"] <= STREAMS_KILL,
              "300 streams, SETTINGS never acknowledged: at most %d served" % STREAMS_KILL, str(res))

        # The server is still fine.
        with grpc.insecure_channel("unix:" + srv.sock) as ch:
            check(ch.unary_unary("/test.Echo/Echo")(b"hi", timeout=10) == b"hi", "server still answers")
        rc = srv.stop()
        check(rc == 0, "server exited 0 with every connection context released (%d)" % rc,
              srv.log()[-1000:])
    finally:
        if srv is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("figures %s" % figures)
    if failures:
        print("%d FAILED:\n  %s" % (len(failures), "\n  ".join(failures)))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
