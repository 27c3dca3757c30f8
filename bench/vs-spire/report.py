"""report.py: the markdown tables of bench/vs-spire from the figures vs_spire.py collected.

    python3 report.py FIGURES.json   (re-prints the tables of a run saved with LANYARD_BENCH_JSON)

Ratio: SPIRE / Lanyard for times, CPU and memory (above 1: Lanyard lower); Lanyard / SPIRE for
rates (above 1: Lanyard faster).
"""
import json
import sys


def pct(v, p):
    s = sorted(v)
    k = max(1, min(len(s), int(-(-p * len(s) // 1))))
    return s[k - 1]


def fnum(x, nd=2):
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def ratio(lan, spi, higher_is_better=False):
    try:
        lan, spi = float(lan), float(spi)
        if lan <= 0 or spi <= 0:
            return "—"
        r = lan / spi if higher_is_better else spi / lan
        return f"{r:.2f}"
    except (TypeError, ValueError):
        return "—"


def pct_of(floor, v):
    """The floor as a percentage of a measured time: how much of the floor's speed it reaches."""
    try:
        return f"{100 * floor / float(v):.1f}%" if float(v) > 0 else "—"
    except (TypeError, ValueError):
        return "—"


def measure(f, name, clients):
    for m in f.get("fetch", []):
        if m["measure"] == name and m["clients"] == str(clients):
            return m
    return {}


def report(fig, out=sys.stdout):
    L, S = fig.get("lanyard", {}), fig.get("spire", {})

    def p(*a):
        print(*a, file=out)

    def row(what, lv, sv, floor="", hib=False, nd=2, unit=""):
        p(f"| {what} | {fnum(lv, nd)}{unit} | {fnum(sv, nd)}{unit} | {ratio(lv, sv, hib)} | {floor} |")

    p(f"vs-spire run {fig.get('started')}{' (QUICK)' if fig.get('quick') else ''}; {fig.get('cpus')} CPUs, "
      f"kernel {fig.get('kernel')}; {fig.get('openssl')}; {fig.get('go')}")
    p(f"versions: {L.get('version')}; {S.get('version')}")
    cf = fig.get("crypto_floor") or {}
    if cf:
        p(f"crypto floor (bench_crypto_floor, pinned, load {cf.get('load')}): P-256 key {cf['keygen_us']} µs, "
          f"sign {cf['sign_us']} µs, verify {cf['verify_us']} µs of CPU")
    for k, lab in (("lanyard", "Lanyard"), ("spire", "SPIRE")):
        f = fig.get(k, {})
        p(f"load average ({lab}): start {f.get('load_start')}, registration {f.get('reg_load')}, "
          f"fetch {f.get('fetch_load')}, storm {f.get('storm_load')}, idle {f.get('idle_load')}, "
          f"end {f.get('load_end')}; {f.get('wall_s')} s in all")
    p()
    p("| row | Lanyard | SPIRE | ratio | floor |")
    p("|---|---|---|---|---|")
    # 1. Registration
    row(f"1. registration, one CLI exec per entry ({L.get('reg_cli_n')} entries), entries/s",
        L.get("reg_cli_per_s"), S.get("reg_cli_per_s"), hib=True, nd=1)
    row(f"1. registration, bulk ({L.get('reg_bulk_n')} entries; SPIRE `entry create -data`, Lanyard admin API "
        "CreateEntry x256 in flight), entries/s", L.get("reg_bulk_per_s"), S.get("reg_bulk_per_s"), hib=True, nd=0)
    # 2. Storm. Floor: the crypto each SVID needs (bench_crypto_floor, this run), over the cores.
    cf = fig.get("crypto_floor") or {}
    for key in sorted((k[:-2] for k in set(L) | set(S) if k.startswith("storm") and k.endswith("_n")),
                      key=lambda k: (L.get(k + "_n") or S.get(k + "_n"))):
        n = L.get(key + "_n") or S.get(key + "_n")
        w = L.get(key + "_workloads", S.get(key + "_workloads", 1))
        floor = cpu_floor = ""
        if cf:
            fs = n * cf["svid_us"] / 1e6 / cf["cpus"]
            floor = (f"{fs:.3f} s: {n:,} x {cf['svid_us']:.1f} µs of CPU / {cf['cpus']} cores (a P-256 key, "
                     f"2 signatures, 2 verifications per SVID); reached: Lanyard {pct_of(fs, L.get(key + '_s'))}, "
                     f"SPIRE {pct_of(fs, S.get(key + '_s'))}")
            cpu_floor = (f"{n * cf['agent_us'] / 1e6:.2f} / {n * cf['server_us'] / 1e6:.2f} "
                         f"({cf['agent_us']:.1f} / {cf['server_us']:.1f} µs per SVID)")
        row(f"2. storm: agent exec -> all {n:,} SVIDs on their workloads' streams ({w} "
            f"workload{'s' if w != 1 else ''}), s", L.get(key + "_s"),
            S.get(key + "_s"), floor, nd=3)
        row(f"2. storm {n:,}: CPU agent / server, s", f"{L.get(key + '_agent_cpu_s')} / {L.get(key + '_server_cpu_s')}",
            f"{S.get(key + '_agent_cpu_s')} / {S.get(key + '_server_cpu_s')}", cpu_floor)
    if S.get("lru_n"):
        row(f"2. SPIRE with its default LRU (1,000), {S['lru_n']:,} entries: SVIDs minted with no workload "
            f"asking, in {S.get('lru_wait_s')} s", None, S.get("lru_minted_unasked"), nd=0)
        nw = (S["lru_n"] + 999) // 1000
        row(f"2. SPIRE with its default LRU, then {nw} workloads entitled to 1,000 each ask at once: -> first "
            f"message / all {S['lru_n']:,} on their streams, s", None,
            f"{S.get('lru_stream_first_msg_s')} / {S.get('lru_stream_all_s')}")
    # 3. Fetch
    pp = fig.get("pingpong", {})
    floor_pp = f"socketpair ping-pong p50 {float(pp.get('p50_us', 0)) / 1e3:.3f} ms" if pp else ""
    uw = next((u for u in L.get("unary", []) if u["measure"] == "unary_warm"), {})
    uc = next((u for u in L.get("unary", []) if u["measure"] == "unary_cold"), {})
    for name, clients, lab, fl in (
            ("fetch_cold", 1, "1 client, new connection", uc),
            ("fetch_warm", 1, "1 client, open connection", uw),
            ("fetch_cold", 100, "100 at once, new connections", None),
            ("fetch_warm", 100, "100 at once, open connections", None),
            ("paced_1000_per_s", 100, "100 open connections, 1,000 calls/s", None)):
        lm, sm = measure(L, name, clients), measure(S, name, clients)
        for q in ("p50_us", "p99_us"):
            floor = ""
            if fl and q in fl:
                floor = f"Lanyard's Health/Check {float(fl[q]) / 1e3:.3f} ms"
            elif name == "fetch_warm" and clients == 1 and q == "p50_us":
                floor = floor_pp
            lv = float(lm[q]) / 1e3 if q in lm else None
            sv = float(sm[q]) / 1e3 if q in sm else None
            row(f"3. FetchX509SVID first response, {lab}: {q[:3]}, ms", lv, sv, floor, nd=3)
        lc = lm.get("agent_cpu_us_per_call"), lm.get("client_cpu_us_per_call")
        sc = sm.get("agent_cpu_us_per_call"), sm.get("client_cpu_us_per_call")
        row(f"3. {lab}: CPU per call, agent (client), µs", f"{lc[0]} ({lc[1]})", f"{sc[0]} ({sc[1]})")
        row(f"3. {lab}: errors / samples", f"{lm.get('errors')} / {lm.get('samples')}",
            f"{sm.get('errors')} / {sm.get('samples')}")
    # 4. Memory
    for key, lab in (("a1", "agent, 1 cached SVID"),
                     ("a1000", "agent, 1,001 cached SVIDs"),
                     ("b1000", "agent, 1,000 cached SVIDs (after the storm)"),
                     ("b10000", "agent, 10,000 cached SVIDs (after the storm)"),
                     ("lru", "agent with SPIRE's default LRU, before a workload asks")):
        la, sa = L.get(f"mem_{key}_agent"), S.get(f"mem_{key}_agent")
        if not la and not sa:
            continue
        for q in ("VmRSS", "VmHWM"):
            row(f"4. {lab}: {q}, KiB", (la or {}).get(q), (sa or {}).get(q), nd=0)
    for key, lab in (("b1000", "1,000"), ("b10000", "10,000")):
        la, sa = L.get(f"mem_{key}_server"), S.get(f"mem_{key}_server")
        if la or sa:
            for q in ("VmRSS", "VmHWM"):
                row(f"4. server, after the storm of {lab}: {q}, KiB", (la or {}).get(q),
                    (sa or {}).get(q), nd=0)
    la, sa = L.get("idle_agent_cpu_s_per_min", {}), S.get("idle_agent_cpu_s_per_min", {})
    names = {"agent-a": "agent A (1,001 SVIDs)", "agent-b": "agent B (1,000 SVIDs)",
             "agent-storm10000": "agent B (10,000 SVIDs)"}
    for k in sorted(set(la) | set(sa)):
        row(f"4. idle CPU per minute, {names.get(k, k)}, CPU s", la.get(k), sa.get(k), nd=3)
    row("4. idle CPU per minute, server, CPU s", L.get("idle_server_cpu_s_per_min"),
        S.get("idle_server_cpu_s_per_min"), nd=3)
    # 5. Revocation
    for key, lab in (("rev_from_exec_ms", "`entry delete` exec -> stream update"),
                     ("rev_from_return_ms", "`entry delete` return -> stream update"),
                     ("rev_cli_ms", "(the `entry delete` CLI itself)")):
        lv, sv = L.get(key), S.get(key)
        for q, nm in ((0.5, "p50"), (0.99, "p99"), (None, "max")):
            a = (max(lv) if q is None else pct(lv, q)) if lv else None
            b = (max(sv) if q is None else pct(sv, q)) if sv else None
            row(f"5. revocation, {lab} ({len(lv or sv or [])} trials): {nm}, ms", a, b, nd=1)
    # 6. Rotation
    lr, sr = L.get("rot_frac"), S.get("rot_frac")
    row(f"6. rotation: new SVID on the stream, fraction of the old one's life, min / p50 / max "
        f"({L.get('rot_renewed')}/{L.get('rot_n')} and {S.get('rot_renewed')}/{S.get('rot_n')} renewed; "
        f"lifetime {fnum(L.get('rot_lifetime_s'), 0)} / {fnum(S.get('rot_lifetime_s'), 0)} s)",
        " / ".join(map(str, lr or [])), " / ".join(map(str, sr or [])))
    # 7. Server down
    ld, sd = L.get("down_fetch", {}), S.get("down_fetch", {})
    row("7. server down: FetchX509SVID answered (new connection each)",
        f"{ld.get('samples')} of {int(ld.get('samples', 0)) + int(ld.get('errors', 0))}",
        f"{sd.get('samples')} of {int(sd.get('samples', 0)) + int(sd.get('errors', 0))}")
    row("7. server down, agent restarted: served", L.get("down_restart_served"), S.get("down_restart_served"))
    row("7. server down, agent restarted: exec -> first answer, s", L.get("down_restart_first_answer_s"),
        S.get("down_restart_first_answer_s"), nd=3)
    # 8. Server restart
    row("8. server restart: exec -> answering, s", L.get("restart_server_up_s"), S.get("restart_server_up_s"), nd=3)
    row("8. server restart: exec -> a new entry's SVID on the watching agent's stream, s",
        L.get("restart_new_svid_s"), S.get("restart_new_svid_s"), nd=3)
    for k, lab in (("lanyard", "Lanyard"), ("spire", "SPIRE")):
        tail = fig.get(k, {}).get("down_restart_agent_log_tail")
        if tail:
            p()
            p(f"{lab} agent restarted while the server was down, last log lines:")
            p()
            p("```")
            p(tail.strip())
            p("```")


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        report(json.load(fh))
