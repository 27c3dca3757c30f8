#!/usr/bin/python3
"""ha_storm.py: several lanyard-servers on one PostgreSQL under faults (issue 16's proof), end to end.

    ha_storm.py LANYARD_SERVER LANYARD_AGENT PROTO_DIR SCENARIO

A real PostgreSQL in a temp dir (server_pg.py's cluster), real servers on it
(ha_pg.py's), real agents each given every server's address. SCENARIO:

  storm  three servers, four agents, 100 entries each with a 40 s X.509 TTL
         (400 SVIDs renewed continuously: each every ~25 s, in bursts), one
         Workload API stream per agent recording every response
         (faults.py's SvidStream). In the middle of a renewal burst the
         server holding the most agents' watches is killed (SIGKILL: with
         four agents on three servers it holds at least two). Checked: its
         agents' watches are on the other servers within 10 s (timed per
         agent, from the survivors' logs); their Workload APIs answer with
         every SVID meanwhile; no response on any stream ever carries an
         SVID outside its validity at its receive time; every SVID is
         renewed after the kill, the last within the TTL; every final chain
         verifies with `openssl verify -x509_strict` against the bundle the
         stream carries (each server's root: the dead one's stays until it
         expires); no stream ended once served, no agent died, no cached
         SVID expired before its renewal.
  token  two servers. One join token sent at the same instant to A and B
         (two raw AttestAgent calls from threads released together, channels
         already open, different keys), 10 rounds: exactly one admitted each
         time, the other refused "already used". Then a lost answer: a real
         agent whose only way in at first is a TCP relay to A that drops the
         connection as the server's answer to AttestAgent comes back (the
         token is used up and the agent never hears it), then refuses; the
         relay to B opens: the agent retries at B with the same token and
         the same key and is admitted again (B's log says so), for the
         token's default ID (one round trip) and a -spiffeID one (the ticket
         step); the same token with another key is refused at B.

Prints ok/FAIL per check and a `figures {...}` line; exits non-zero on any failure.
"""
import datetime
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import faults  # noqa: E402  (reads sys.argv[1:5]: the same arguments)
import ha_pg  # noqa: E402  (reads sys.argv[1:3])
import server_agent_api as sa  # noqa: E402  (reads sys.argv[1:3]; only its helpers are used)
from harness import Daemon, check, exit_status, failures, figures, finish, openssl_verify, protoc, run, split_der  # noqa: E402
from server_pg import Postgres, pg_bindir  # noqa: E402

SERVER, AGENT, PROTO_DIR, SCENARIO = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
TD = "example.org"
TDID = "spiffe://" + TD
UID = os.getuid()
MOVE_BOUND_S = 10


def cluster(tmp, names, extra=""):
    """PostgreSQL and one server per name on it; None when something failed (checked)."""
    bindir = pg_bindir()
    if not check(bindir is not None, "PostgreSQL binaries found (install postgresql: scripts/install-deps.sh)"):
        return None, []
    pg = Postgres(tmp, bindir)
    pg.start()
    rc, _, err = pg.psql("postgres", "CREATE DATABASE lanyard")
    check(rc == 0, "database created", err)
    servers = []
    for name in names:
        s = ha_pg.Server(tmp, name, pg.conninfo())
        if extra:
            with open(s.config, "a") as f:
                f.write(extra)
        ok = s.start()
        servers.append(s)
        if not check(ok, f"server {name} starts on the shared database", s.daemon.text()[-1500:]):
            return pg, servers
    check(ha_pg.wait_for(lambda: all(s.roots() >= len(names) for s in servers), 15),
          f"every server's bundle holds the {len(names)} servers' roots", str([s.roots() for s in servers]))
    return pg, servers


def start_agent(tmp, name, addresses, token, bundle):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    a = types.SimpleNamespace(name=name, dir=d, agent_sock=os.path.join(d, "public", "api.sock"),
                              log_path=os.path.join(d, "agent.log"))
    a.daemon = Daemon([AGENT, "run", "-trustDomain", TD, "-serverAddress", addresses, "-socketPath", a.agent_sock,
                       "-dataDir", os.path.join(d, "data"), "-logLevel", "debug", "-joinToken", token,
                       "-trustBundle", bundle], a.log_path)
    return a


def healthy(a):
    return run([AGENT, "healthcheck", "-socketPath", a.agent_sock])[0] == 0


class LogMark:
    """What a daemon's log gained since the mark."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.off = len(daemon.text())

    def since(self):
        return self.daemon.text()[self.off:]


def watch_opened(text, agent_id):
    return f"watch of {agent_id} opened" in text


# ---- storm ----------------------------------------------------------------------------------

def served_now(a, pb, pb_grpc, want):
    """One FetchX509SVID on the agent: True when it carries every wanted ID, each valid now."""
    ch = grpc.insecure_channel("unix:" + a.agent_sock, options=[("grpc.max_receive_message_length", 64 << 20)])
    try:
        it = pb_grpc.SpiffeWorkloadAPIStub(ch).FetchX509SVID(pb.X509SVIDRequest(), metadata=faults.MD, timeout=3)
        r = next(it)
        it.cancel()
        from cryptography import x509
        now = time.time()
        ids = set()
        for s in r.svids:
            c = x509.load_der_x509_certificate(split_der(bytes(s.x509_svid))[0])
            nb = c.not_valid_before.replace(tzinfo=datetime.timezone.utc).timestamp()
            na = c.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()
            if nb <= now <= na:
                ids.add(s.spiffe_id)
        return ids == want
    except grpc.RpcError:
        return False
    finally:
        ch.close()


def create_entries(server, agent_ids, per_agent, ttl, tmp):
    apb, apb_grpc, gpb = faults.admin_stubs(tmp)
    ch = grpc.insecure_channel("unix:" + server.sock)
    admin = apb_grpc.AdminStub(ch)
    futs, made, errors = [], 0, []
    todo = [(aid, k) for aid in agent_ids for k in range(per_agent)]
    for i, (aid, k) in enumerate(todo):
        e = gpb.Entry(spiffe_id=f"{aid.replace('/lanyard/agent/', '/storm/')}/{k}", parent_id=aid,
                      selectors=[gpb.Selector(type="unix", value=f"uid:{UID}")], x509_svid_ttl=ttl)
        futs.append(admin.CreateEntry.future(e, timeout=120))
        if len(futs) >= 64 or i == len(todo) - 1:  # 64 in flight: see bench/vs-spire
            for f in futs:
                try:
                    f.result()
                    made += 1
                except grpc.RpcError as ex:
                    errors.append(ex.details())
            futs = []
    ch.close()
    return made, errors


def scenario_storm(tmp):
    n_agents = 4
    per_agent = int(os.environ.get("LANYARD_HA_STORM_ENTRIES", "100"))
    # TTL 40 s: a 50 s life (backdated 10 s), renewed 12.5-17.5 s after issuance, expiring 40 s after it.
    ttl = 40
    pg, servers = cluster(tmp, ["a", "b", "c"])
    try:
        if len(servers) < 3 or failures:
            return
        storm(tmp, servers, n_agents, per_agent, ttl)
    finally:
        for s in servers:
            if s.daemon is not None and s.daemon.alive():
                s.daemon.stop(signal.SIGKILL, timeout=10)
        if pg is not None:
            pg.stop("immediate")


def storm(tmp, servers, n_agents, per_agent, ttl):
    pb, pb_grpc = faults.make_stubs(tmp)
    bundle = os.path.join(tmp, "bootstrap.pem")
    with open(bundle, "w") as f:
        f.write(servers[0].cli("bundle", "show")[1])
    agent_ids = [f"{TDID}/lanyard/agent/storm-{i}" for i in range(n_agents)]
    t0 = time.time()
    made, errors = create_entries(servers[0], agent_ids, per_agent, ttl, tmp)
    figures["storm_entries"] = made
    figures["storm_create_s"] = round(time.time() - t0, 2)
    if not check(made == n_agents * per_agent, f"{n_agents * per_agent} entries created (admin API)",
                 str(errors[:3])):
        return
    want = {aid: {f"{aid.replace('/lanyard/agent/', '/storm/')}/{k}" for k in range(per_agent)} for aid in agent_ids}
    addresses = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    agents = []
    for i, aid in enumerate(agent_ids):
        tok = servers[i % 3].token(aid)  # made through any server, used wherever the agent lands
        agents.append(start_agent(tmp, f"agent{i}", addresses, tok, bundle))
    pids = [a.daemon.pid for a in agents]
    leaves, lock = {}, threading.Lock()
    streams = {}
    ha_pg.wait_for(lambda: all(os.path.exists(a.agent_sock) for a in agents), 30)
    for a, aid in zip(agents, agent_ids):
        streams[aid] = faults.SvidStream(a, pb, pb_grpc, leaves, lock)
        streams[aid].start()
    t_start = time.time()
    if not check(ha_pg.wait_for(lambda: all(set(streams[aid].current) == want[aid] for aid in agent_ids), 120, 0.1),
                 f"every agent's stream serves its {per_agent} SVIDs",
                 str([len(streams[aid].current) for aid in agent_ids])):
        return
    figures["storm_first_issuance_s"] = round(time.time() - t_start, 2)
    for aid in agent_ids:
        streams[aid].first = {sid: v[0] for sid, v in streams[aid].current.items()}

    # Where each agent's watch is: the server whose log has its (5 s periodic) watch opening.
    marks = [LogMark(s.daemon) for s in servers]
    where = {}

    def located():
        for aid in agent_ids:
            on = [s for s, m in zip(servers, marks) if watch_opened(m.since(), aid)]
            where[aid] = on[0] if len(on) == 1 else None
        return all(where[aid] is not None for aid in agent_ids)
    ha_pg.wait_for(located, 20, 0.2)
    figures["storm_agents_per_server"] = {s.name: sum(1 for aid in agent_ids if where[aid] is s) for s in servers}
    if not check(all(where[aid] is not None for aid in agent_ids), "each agent's watch is on one server",
                 str(figures["storm_agents_per_server"])):
        return
    victim = max(servers, key=lambda s: sum(1 for aid in agent_ids if where[aid] is s))
    moving = [aid for aid in agent_ids if where[aid] is victim]
    staying = [aid for aid in agent_ids if aid not in moving]
    survivors = [s for s in servers if s is not victim]
    check(len(moving) >= 2, f"server {victim.name} holds {len(moving)} of the {n_agents} agents (four agents on three "
          "servers: at least two on one)")

    # The renewal burst: the kill once a fifth of the victim's agents' SVIDs were renewed (their logs).
    counts = {aid: faults.IssuedCount(a.log_path) for a, aid in zip(agents, agent_ids)}
    base = {aid: per_agent for aid in agent_ids}
    n_moving = len(moving) * per_agent

    def renewed_moving():
        return sum(counts[aid]() - base[aid] for aid in moving)
    burst = ha_pg.wait_for(lambda: renewed_moving() >= n_moving // 5, ttl + 10, 0.02)
    # ... as soon as one of them sends a batch: renewals in flight at the kill, likely.
    sent0 = sum(counts[aid].sent for aid in moving)

    def batch_sent():
        renewed_moving()  # reads the logs on: .sent follows
        return sum(counts[aid].sent for aid in moving) > sent0
    in_flight = ha_pg.wait_for(batch_sent, 10, 0.002)
    survivor_marks = {s.name: LogMark(s.daemon) for s in survivors}
    victim.daemon.stop(signal.SIGKILL, timeout=10)
    t_kill = time.time()
    at_kill = renewed_moving()
    figures["storm_renewed_at_kill"] = at_kill
    check(burst and in_flight and at_kill < n_moving, f"server {victim.name} SIGKILLed in the middle of its agents' "
          f"renewal burst ({at_kill} of {n_moving} renewed), right after a batch was sent")
    at_kill_serials = {aid: {sid: v[0] for sid, v in streams[aid].current.items()} for aid in agent_ids}

    # The move: each agent's watch on a survivor, timed; its Workload API answers meanwhile.
    moved_at, probes, probes_ok = {}, 0, 0
    deadline = time.time() + MOVE_BOUND_S + 20
    while len(moved_at) < len(moving) and time.time() < deadline:
        for aid, a in zip(agent_ids, agents):
            if aid not in moving or aid in moved_at:
                continue
            if any(watch_opened(m.since(), aid) for m in survivor_marks.values()):
                moved_at[aid] = time.time() - t_kill
                continue
            probes += 1
            probes_ok += served_now(a, pb, pb_grpc, want[aid])
        time.sleep(0.05)
    figures["storm_move_s"] = {aid.rsplit("/", 1)[-1]: round(t, 2) for aid, t in sorted(moved_at.items())}
    figures["storm_move_max_s"] = round(max(moved_at.values()), 2) if moved_at else None
    figures["storm_workload_probes_while_moving"] = [probes_ok, probes]
    check(len(moved_at) == len(moving) and max(moved_at.values()) <= MOVE_BOUND_S,
          f"all {len(moving)} agents of the killed server have their watch on another server within {MOVE_BOUND_S} s "
          f"(slowest {figures['storm_move_max_s']} s)", str(figures["storm_move_s"]))
    check(probes_ok == probes, f"while they move, their Workload API serves every SVID, each valid "
          f"({probes_ok} of {probes} calls)")
    for aid, a in zip(agent_ids, agents):
        if aid in moving:
            check(re.search(r"retrying in \d+ ms with server 127\.0\.0\.1:(%s)" %
                            "|".join(str(s.port) for s in survivors), a.daemon.text()) is not None,
                  f"{a.name}: its log names the move to a survivor")

    # Converged: every SVID of every agent renewed after the kill (its serial changed).
    def renewed_since_kill(aid):
        cur, old = streams[aid].current, at_kill_serials[aid]
        return len(cur) == per_agent and all(v[0] != old.get(sid) for sid, v in cur.items())
    conv = ha_pg.wait_for(lambda: all(renewed_since_kill(aid) for aid in agent_ids), ttl + 30, 0.1)
    t_conv = time.time()
    figures["storm_kill_to_all_renewed_s"] = round(t_conv - t_kill, 2) if conv else None
    check(conv, f"every one of the {n_agents * per_agent} SVIDs renewed after the kill "
          f"({figures['storm_kill_to_all_renewed_s']} s after it)",
          str([sum(1 for sid, v in streams[aid].current.items() if v[0] != at_kill_serials[aid].get(sid))
               for aid in agent_ids]))
    time.sleep(2)  # whatever follows is recorded too
    for s in streams.values():
        s.stop()
    time.sleep(0.3)

    viol = [v for s in streams.values() for v in s.violations]
    figures["storm_responses"] = sum(s.responses for s in streams.values())
    figures["storm_min_life_left_served_s"] = round(min(s.min_left for s in streams.values()), 1)
    check(not viol, f"no response on any stream carried an SVID outside its validity ({figures['storm_responses']} "
          f"responses, least life left when served {figures['storm_min_life_left_served_s']} s)", str(viol[:3]))
    ends = [(aid.rsplit("/", 1)[-1], e) for aid, s in streams.items() for e in s.ends]
    check(not [e for _, e in ends if e[0] != "UNAVAILABLE" or e[1] > 0],
          "no stream was denied or ended once served (only UNAVAILABLE while an agent starts)", str(ends))

    # The end state: valid for a while yet, chains verify against the bundle on the stream (every root).
    vdir = os.path.join(tmp, "verify")
    os.makedirs(vdir)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    now = time.time()
    roots, inter, leaf_files, wrong, short, bundle_roots = set(), set(), [], [], [], set()
    for aid in agent_ids:
        for i, (sid, v) in enumerate(sorted(streams[aid].current.items())):
            certs = split_der(v[3])
            leaf = x509.load_der_x509_certificate(certs[0])
            uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
            if uris != [sid]:
                wrong.append(sid)
            if not (v[1] <= now and v[2] - now >= ttl / 4):
                short.append(sid)
            inter.update(certs[1:])
            b = split_der(v[4])
            roots.update(b)
            bundle_roots.add(len(b))
            p = os.path.join(vdir, f"{aid.rsplit('/', 1)[-1]}-{i}.pem")
            with open(p, "wb") as f:
                f.write(leaf.public_bytes(Encoding.PEM))
            leaf_files.append(p)
    check(bundle_roots == {3}, "every stream's bundle holds the three servers' roots (the dead one's until it "
          "expires)", str(bundle_roots))
    check(not short, f"every final SVID valid now and for at least {ttl // 4} s more", str(short[:3]))

    r, oks = openssl_verify(vdir, roots, inter, leaf_files)
    check(r.returncode == 0 and oks == len(leaf_files) == n_agents * per_agent and not wrong,
          f"every final chain verifies against the bundle (openssl verify -x509_strict: {oks} of "
          f"{n_agents * per_agent} OK) and names its SPIFFE ID", (r.stderr or r.stdout)[-800:] + str(wrong[:3]))

    expired = retried = 0
    for a, pid in zip(agents, pids):
        text = a.daemon.text()
        rt, ex = faults.agent_log_counts(text)
        retried += rt
        expired += ex
        check(a.daemon.alive() and a.daemon.pid == pid, f"{a.name}: never died", text[-800:])
    figures["storm_renewals_retried"] = retried
    check(expired == 0, "no SVID expired in any agent's cache before its renewal", str(expired))
    for s in survivors:
        check(s.cli("healthcheck")[0] == 0, f"server {s.name} healthy after the storm")
    for a in agents:
        rc = a.daemon.stop()
        check(rc == 0, f"{a.name}: stops cleanly", f"rc={rc} " + a.daemon.text()[-800:])


# ---- token ----------------------------------------------------------------------------------

# The server's AttestAgent answer carries an SVID chain and the bundle (2 KB and more, in one write); what the
# server sends before it after the client's request (TLS session tickets, HTTP/2 settings, a ticket-step
# answer) comes in reads of at most ~550 bytes, under 1,000 in all (the figures print them).
LOSE_CHUNK_BYTES = 1000
LOSE_AFTER_BYTES = 4000


class Relay(threading.Thread):
    """TCP 127.0.0.1:port -> 127.0.0.1:target, bytes as they are (TLS end to end). Modes: refuse (accept and
    close at once), pass, lose: the first connection is cut, without forwarding them, when the server sends
    its AttestAgent answer after the client's request (a read over LOSE_CHUNK_BYTES, or over LOSE_AFTER_BYTES
    in all: the TLS tickets and HTTP/2 settings before it are smaller); then `on_lost()` and refuse."""

    def __init__(self, target, mode, on_lost=None):
        super().__init__(daemon=True)
        self.target, self.mode, self.on_lost = target, mode, on_lost
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lost = 0
        self.refused = 0
        self.before_answer = []  # server byte counts forwarded after the request, on the lossy connection
        self.start()

    def run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            if self.mode == "refuse":
                self.refused += 1
                c.close()
                continue
            lose = self.mode == "lose"
            threading.Thread(target=self.pump, args=(c, lose), daemon=True).start()

    def pump(self, c, lose):
        try:
            u = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            c.close()
            return
        chunks, after = 0, 0
        try:
            while True:
                for s in select.select([c, u], [], [], 1.0)[0]:
                    d = s.recv(65536)
                    if not d:
                        return
                    if s is c:
                        chunks += 1
                        u.sendall(d)
                        continue
                    if lose and chunks >= 2:
                        after += len(d)
                        if len(d) > LOSE_CHUNK_BYTES or after > LOSE_AFTER_BYTES:
                            self.lost += 1
                            self.mode = "refuse"
                            if self.on_lost:
                                self.on_lost()
                            return
                        self.before_answer.append(len(d))
                    c.sendall(d)
        except OSError:
            return
        finally:
            for s in (c, u):
                s.close()

    def close(self):
        self.ls.close()


def agent_stubs(tmp):
    d = os.path.join(tmp, "pb-agent")
    protoc(PROTO_DIR, d, "agent.proto")
    sys.path.insert(0, d)
    import agent_pb2
    import agent_pb2_grpc
    return agent_pb2, agent_pb2_grpc


def same_instant(tmp, a, b, apb, apb_grpc, bundle, rounds=10):
    """One token to A and B at once (raw AttestAgent from two threads released together): one admitted."""
    pa, pb_ = sa.TLSProxy(a.port, bundle), sa.TLSProxy(b.port, bundle)
    chans = [grpc.insecure_channel(f"127.0.0.1:{p.port}") for p in (pa, pb_)]
    stubs = [apb_grpc.AgentStub(ch) for ch in chans]
    warm = [sa.code_of(lambda st=st: st.AttestAgent(apb.AttestAgentRequest(
        join_token=apb.JoinTokenAttestation(token="warm-up-no-such-token"),
        csr=sa.csr_der(sa.ec_key(), f"{TDID}/lanyard/agent/join_token/warm-up-no-such-token")), timeout=10))[0]
        for st in stubs]
    check(warm == [grpc.StatusCode.PERMISSION_DENIED] * 2, "raw AttestAgent through A and B: channels open",
          str(warm))
    admitted, skews, refusals = [], [], set()
    for rnd in range(rounds):
        tok = (a if rnd % 2 == 0 else b).token()
        aid = f"{TDID}/lanyard/agent/join_token/{tok}"
        reqs = [apb.AttestAgentRequest(join_token=apb.JoinTokenAttestation(token=tok), csr=sa.csr_der(sa.ec_key(), aid))
                for _ in stubs]
        gate = threading.Barrier(2)
        res, sent = [None, None], [0.0, 0.0]

        def call(i):
            gate.wait()
            sent[i] = time.perf_counter()
            res[i] = sa.code_of(lambda: stubs[i].AttestAgent(reqs[i], timeout=20))
        ts = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        skews.append(abs(sent[0] - sent[1]) * 1e3)
        ok = [r for r in res if r[0] == grpc.StatusCode.OK]
        admitted.append(len(ok))
        for r in res:
            if r[0] != grpc.StatusCode.OK:
                refusals.add((r[0].name, "already used" in (r[1] or "")))
        if len(ok) == 1:
            check(ok[0][1].svid.spiffe_id == aid, f"round {rnd}: the one admitted gets the token's ID", str(ok[0][1]))
    figures["token_same_instant_rounds"] = rounds
    figures["token_same_instant_send_skew_ms_max"] = round(max(skews), 3)
    check(admitted == [1] * rounds, f"one token sent to A and B at the same instant ({rounds} rounds, the two sends "
          f"at most {figures['token_same_instant_send_skew_ms_max']} ms apart): exactly one admitted each time",
          str(admitted))
    check(refusals == {("PERMISSION_DENIED", True)}, "... the other refused PERMISSION_DENIED \"already used\"",
          str(refusals))
    for ch in chans:
        ch.close()
    pa.close()
    pb_.close()


def lost_answer(tmp, tag, a, b, apb, apb_grpc, bundle, custom_id):
    """The answer to the first AttestAgent lost on the way back from A; the agent retries at B (see the top)."""
    tok = a.token(custom_id) if custom_id else a.token()
    aid = custom_id or f"{TDID}/lanyard/agent/join_token/{tok}"
    # The logs redact an ID that holds the token.
    idp = re.escape(aid) if custom_id else r"spiffe://example\.\[redacted\]"
    to_b = Relay(b.port, "refuse")

    def open_b():
        to_b.mode = "pass"
    to_a = Relay(a.port, "lose", on_lost=open_b)
    ma, mb = LogMark(a.daemon), LogMark(b.daemon)
    ag = start_agent(tmp, f"agent-{tag}", f"127.0.0.1:{to_a.port},127.0.0.1:{to_b.port}", tok, bundle)
    ok = ha_pg.wait_for(lambda: not ag.daemon.alive() or healthy(ag), 60, 0.2) and ag.daemon.alive()
    text = ag.daemon.text()
    figures[f"token_{tag}_server_bytes_before_answer"] = to_a.before_answer
    check(to_a.lost == 1, f"{tag}: the relay to A cut the connection as A's answer came back", str(to_a.lost))
    check(re.search(r"agent %s (attested|admitted)" % idp, ma.since()) is not None,
          f"{tag}: A admitted the agent (the token used up) before the answer was lost", ma.since()[-800:])
    check("attestation failed" in text or "attestation refused" in text,
          f"{tag}: the agent did not hear the answer (its attempt failed)", text[-800:])
    check(ok and re.search(r"attested as %s" % idp, text) is not None,
          f"{tag}: the agent retries at B with the same token and is admitted",
          text[-1500:])
    check("admitted again" in mb.since() and re.search(r"agent %s attested \(join_token\)" % idp,
                                                         mb.since()) is not None,
          f"{tag}: B answered the token again for the key that used it", mb.since()[-800:])
    check("already used" not in text, f"{tag}: the agent was never refused \"already used\"", text[-800:])
    # Another key with the same token: a second use.
    px = sa.TLSProxy(b.port, bundle)
    ch = grpc.insecure_channel(f"127.0.0.1:{px.port}")
    code, det = sa.code_of(lambda: apb_grpc.AgentStub(ch).AttestAgent(apb.AttestAgentRequest(
        join_token=apb.JoinTokenAttestation(token=tok), csr=sa.csr_der(sa.ec_key(), aid)), timeout=20))
    check(code == grpc.StatusCode.PERMISSION_DENIED and "already used" in (det or ""),
          f"{tag}: the same token with another key is refused \"already used\"", f"{code} {det}")
    ch.close()
    px.close()
    rc = ag.daemon.stop()
    check(rc == 0, f"{tag}: the agent stops cleanly", f"rc={rc} " + ag.daemon.text()[-800:])
    to_a.close()
    to_b.close()


def scenario_token(tmp):
    # Attestation from 127.0.0.1 unlimited: the rounds below attest faster than 1/s.
    pg, servers = cluster(tmp, ["a", "b"], "  ratelimit:\n    attestation: false\n")
    try:
        if len(servers) < 2 or failures:
            return
        a, b = servers
        apb, apb_grpc = agent_stubs(tmp)
        bundle = os.path.join(tmp, "bootstrap.pem")
        with open(bundle, "w") as f:
            f.write(a.cli("bundle", "show")[1])
        same_instant(tmp, a, b, apb, apb_grpc, bundle)
        lost_answer(tmp, "default_id", a, b, apb, apb_grpc, bundle, None)
        lost_answer(tmp, "ticket", a, b, apb, apb_grpc, bundle, f"{TDID}/lanyard/agent/racks/r1-n7")
        rc, n, _ = pg.psql("lanyard", "SELECT count(*) FROM join_token_uses")
        check(rc == 0 and n.isdigit() and int(n) >= 2, "the uses are in the shared database (join_token_uses)", n)
    finally:
        for s in servers:
            if s.daemon is not None and s.daemon.alive():
                s.daemon.stop(signal.SIGKILL, timeout=10)
        if pg is not None:
            pg.stop("immediate")


def main():
    tmp = tempfile.mkdtemp(prefix=f"lanyard-ha-storm-{SCENARIO}-")
    os.chmod(tmp, 0o755)  # PostgreSQL runs as nobody when we are root: it must reach its directory
    try:
        {"storm": scenario_storm, "token": scenario_token}[SCENARIO](tmp)
    except Exception as e:  # a broken harness is a failure, with its reason
        check(False, "harness", repr(e))
    finally:
        for p in faults.PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        finish(tmp, with_figures=True)


if __name__ == "__main__":
    main()
    sys.exit(exit_status())
