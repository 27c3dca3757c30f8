#!/usr/bin/python3
"""storm_reader.py SOCKET N PB_DIR TIMEOUT_S: one workload of a storm row (vs_spire.py runs it
under its own uid with setpriv). Opens FetchX509SVID on SOCKET, again every 20 ms after an error
(no socket yet, UNAVAILABLE, PERMISSION_DENIED while nothing is issued), and prints
"all T first T0 msgs M": the CLOCK_MONOTONIC time of the first message carrying at least N SVIDs,
of its first message, and how many messages came; exit 1 after TIMEOUT_S without one."""
import sys
import time

sock, n, pb, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
sys.path.insert(0, pb)
import grpc  # noqa: E402
import workload_pb2  # noqa: E402
import workload_pb2_grpc  # noqa: E402

deadline = time.monotonic() + timeout
first, msgs, best = None, 0, 0
while time.monotonic() < deadline:
    ch = grpc.insecure_channel("unix:" + sock, options=[("grpc.max_receive_message_length", 64 << 20)])
    try:
        it = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID(
            workload_pb2.X509SVIDRequest(), metadata=(("workload.spiffe.io", "true"),),
            timeout=max(0.1, deadline - time.monotonic()))
        for r in it:
            t = time.monotonic()
            msgs += 1
            first = first or t
            best = max(best, len(r.svids))
            if len(r.svids) >= n:
                print(f"all {t:.6f} first {first:.6f} msgs {msgs}", flush=True)
                sys.exit(0)
    except grpc.RpcError:
        pass
    finally:
        ch.close()
    time.sleep(0.02)
print(f"timeout: at most {best} of {n} SVIDs in {msgs} messages", flush=True)
sys.exit(1)
