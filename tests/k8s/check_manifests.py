#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in k8s/ (docs/kubernetes.md).

No cluster is needed. In order:
  1. yamllint (Debian) with k8s/.yamllint, strict: warnings fail too;
  2. the kustomization resolved by this script (resources, namespace), and,
     when kubectl is installed, `kubectl kustomize` compared with it;
  3. every object validated against the Kubernetes 1.34 OpenAPI schemas
     (npm kubernetes-models, tests/k8s/validate_schema.mjs): types, required
     fields, enums, and unknown fields;
  4. our own rules: probes, hardened securityContext, resources, the agent's
     hostPID, socket hostPath, projected token and node name, RBAC, the
     workload's socket, cross-references between objects and the configs;
  5. the embedded server.yaml / agent.yaml: every key in the daemon's own key
     table (known_keys[] in server/server_config.c, agent/agent.c) and in the
     docs' tables; with -server-bin/-agent-bin, the real binaries parse them
     (`run` with a data dir that cannot be made: exit 1 at the data dir means
     the config was accepted, exit 2 that it was refused);
  6. the alert rules in k8s/monitoring/ (PrometheusRule, apart from the
     kustomization: the CRD exists only with prometheus-operator): their
     shape, durations and severities, and every metric their expressions
     name exported by a daemon (the metric families declared in server/,
     agent/ and rpc/ sources);
  7. negative self-checks: mutated copies (a missing probe, a wrong field
     type, an unknown field, a wrong audience, a broken file, an alert on a
     metric no daemon exports...) must each be rejected by the stage named,
     or this test fails.

Usage: check_manifests.py --repo ROOT [--server-bin P --agent-bin P]
Prints ok/FAIL per check and "N passed, M failed"; exit 1 on any failure,
else 77 (a skip, for ctest) when a stage cannot run here (`SKIP` lines say why:
no kubectl, which scripts/install-deps.sh does not install; no binaries given).
A missing tool that scripts/install-deps.sh installs is a failure.
"""
import argparse
import copy
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

SOCKET_PATH = "/run/lanyard/sockets/agent.sock"  # SPEC §2, k8s
HEALTH_PORT = 8080
EXTERNAL_CONFIGMAPS = {"lanyard-bundle"}  # made by the operator (k8s/README.md)
EXTERNAL_SECRETS = {"lanyard-postgres"}  # made by the operator (k8s/README.md): never committed
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Pod", "Job", "ReplicaSet"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources"}
PSAT_AUDIENCE_DEFAULT = "lanyard-server"
PSAT_TOKEN_DEFAULT = "/var/run/secrets/tokens/lanyard-agent"
NODE_NAME_ENV_DEFAULT = "MY_NODE_NAME"

PASSED = 0
FAILED = 0
SKIPPED = []
SKIP_RC = 77  # ctest's SKIP_RETURN_CODE for integration.k8s_manifests


def skip(what, reason):
    SKIPPED.append(what)
    print(f"SKIP {what}: {reason}")


def summary():
    print(f"{PASSED} passed, {FAILED} failed" + (f", {len(SKIPPED)} SKIPPED: {'; '.join(SKIPPED)}" if SKIPPED else ""))
    return 1 if FAILED else SKIP_RC if SKIPPED else 0


def report(ok, what, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"ok   {what}")
    else:
        FAILED += 1
        print(f"FAIL {what}")
        for line in detail.splitlines():
            print(f"       {line}")
    sys.stdout.flush()


# ---------------------------------------------------------------- 1. yamllint

def run_yamllint(k8s_dir):
    cfg = os.path.join(k8s_dir, ".yamllint")
    if not os.path.exists(cfg):
        return [f"{cfg}: missing"]
    r = subprocess.run(["yamllint", "-s", "-f", "parsable", "-c", cfg, k8s_dir],
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return []
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()] or [f"yamllint exit {r.returncode}"]


# ------------------------------------------------------ 2. kustomize resolution

def obj_id(o):
    md = o.get("metadata") or {}
    return (o.get("apiVersion"), o.get("kind"), md.get("namespace"), md.get("name"))


def resolve(k8s_dir, problems):
    """Own resolution of k8s_dir/kustomization.yaml: (objects, {id: file})."""
    kpath = os.path.join(k8s_dir, "kustomization.yaml")
    try:
        with open(kpath) as f:
            kust = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{kpath}: {e}")
        return [], {}
    if not isinstance(kust, dict):
        problems.append(f"{kpath}: not a mapping")
        return [], {}
    for k in kust:
        if k not in KUSTOMIZATION_KEYS:
            problems.append(f"{kpath}: key {k!r} is not handled by this checker's resolver "
                            f"(only {sorted(KUSTOMIZATION_KEYS)}): extend check_manifests.py")
    if kust.get("kind") != "Kustomization":
        problems.append(f"{kpath}: kind must be Kustomization")
    ns = kust.get("namespace")
    resources = kust.get("resources") or []
    listed = set()
    objects, origin = [], {}
    for res in resources:
        path = os.path.normpath(os.path.join(k8s_dir, res))
        listed.add(path)
        try:
            with open(path) as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            problems.append(f"{kpath}: resource {res}: {e}")
            continue
        for d in docs:
            if not isinstance(d, dict):
                problems.append(f"{res}: a document that is not a mapping")
                continue
            if ns is not None and d.get("kind") not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = ns
            if ns is not None and d.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
                for s in d.get("subjects") or []:
                    if s.get("kind") == "ServiceAccount" and "namespace" not in s:
                        s["namespace"] = ns
            oid = obj_id(d)
            if oid in origin:
                problems.append(f"{res}: {oid} defined twice (also in {origin[oid]})")
            origin[oid] = res
            objects.append(d)
    for name in sorted(os.listdir(k8s_dir)):
        p = os.path.join(k8s_dir, name)
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" and p not in listed:
            problems.append(f"{name}: not listed in kustomization.yaml resources")
    return objects, origin


def kubectl_kustomize(k8s_dir, objects):
    """Problems found by comparing `kubectl kustomize` with our resolution; None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    r = subprocess.run([kubectl, "kustomize", k8s_dir], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return [f"kubectl kustomize: exit {r.returncode}: {r.stderr.strip()}"]
    theirs = {obj_id(o): o for o in yaml.safe_load_all(r.stdout) if o}
    ours = {obj_id(o): o for o in objects}
    problems = []
    for oid in sorted(set(theirs) | set(ours), key=str):
        if oid not in theirs:
            problems.append(f"{oid}: in our resolution, not in kubectl kustomize's")
        elif oid not in ours:
            problems.append(f"{oid}: in kubectl kustomize's output, not in ours")
        elif theirs[oid] != ours[oid]:
            problems.append(f"{oid}: differs between kubectl kustomize and our resolution")
    return problems


# ----------------------------------------------------------- 3. schema (node)

def schema_check(node_dir, objects):
    """{index: [errors]} from validate_schema.mjs for a list of objects."""
    r = subprocess.run(["node", os.path.join(node_dir, "validate_schema.mjs")],
                       input=json.dumps(objects), capture_output=True, text=True, timeout=300,
                       cwd=node_dir)
    if r.returncode != 0:
        raise RuntimeError(f"validate_schema.mjs exit {r.returncode}: {r.stderr.strip()[:2000]}")
    return {x["index"]: x["errors"] for x in json.loads(r.stdout)}


def schema_problems(node_dir, objects):
    res = schema_check(node_dir, objects)
    out = []
    for i, o in enumerate(objects):
        for e in res.get(i, []):
            out.append(f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}: {e}")
    return out


# ------------------------------------------------------- 5. config key tables

def c_string_tokens(text, defines):
    """Concatenation of the string literals and macros of a C expression."""
    out = ""
    for tok in re.findall(r'"(?:[^"\\]|\\.)*"|[A-Za-z_]\w*', text):
        if tok.startswith('"'):
            out += tok[1:-1]
        elif tok in defines:
            out += defines[tok]
        elif tok == "NULL":
            return None
        else:
            raise ValueError(f"unknown token {tok}")
    return out


def c_key_table(path, array):
    """The strings of `static const char *const ARRAY[] = {...};` in a C file."""
    with open(path) as f:
        src = f.read()
    defines = {}
    for name, body in re.findall(r'^#define\s+(\w+)\s+((?:\w+\s+)?"[^"\n]*")\s*$', src, re.M):
        try:
            defines[name] = c_string_tokens(body, defines)
        except ValueError:
            pass
    m = re.search(r"\b" + re.escape(array) + r"\[\]\s*=\s*\{(.*?)\};", src, re.S)
    if m is None:
        raise ValueError(f"{path}: no array {array}")
    keys = []
    for part in m.group(1).split(","):
        part = part.strip()
        if not part:
            continue
        s = c_string_tokens(part, defines)
        if s is not None:
            keys.append(s)
    return keys


def doc_keys(path, prefix):
    """Config keys the docs' tables name: 'config key (`PREFIX.`)' tables (2nd column) and
    'key (under `PREFIX:health_checks`)' tables (1st column)."""
    keys = set()
    col = None
    sub = ""
    with open(path) as f:
        for line in f:
            if not line.startswith("|"):
                col = None if not line.strip() else col
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            m = re.match(r"key \(under `" + prefix + r":([\w.]+)`\)", cells[0])
            if m:
                col, sub = 0, m.group(1) + "."
                continue
            if len(cells) > 1 and cells[1].startswith(f"config key (`{prefix}.`)"):
                col, sub = 1, ""
                continue
            if col is None or all(c and set(c) <= set("-: ") for c in cells):
                continue
            if col < len(cells):
                for k in re.findall(r"`([\w.*]+)`", cells[col]):
                    keys.add(f"{prefix}.{sub}{k}")
    return keys


def flatten(prefix, v):
    if isinstance(v, dict) and v:
        for k, x in v.items():
            yield from flatten(f"{prefix}.{k}", x)
    else:
        yield prefix, v


def key_known(key, table):
    for t in table:
        if t == key:
            return True
        if t.endswith(".*") and key.startswith(t[:-1]):
            return True
    return False


def config_key_problems(repo, name, cfg):
    """Problems of one parsed config (server.yaml or agent.yaml)."""
    role = "server" if name == "server.yaml" else "agent"
    src = os.path.join(repo, "server/server_config.c" if role == "server" else "agent/agent.c")
    doc = os.path.join(repo, f"docs/{role}.md")
    if not isinstance(cfg, dict) or set(cfg) != {role}:
        return [f"{name}: must hold exactly one top-level key `{role}:`"]
    table = c_key_table(src, "known_keys")
    documented = doc_keys(doc, role)
    psat = c_key_table(src, "psat_keys") if role == "server" else []
    with open(doc) as f:
        doc_text = f.read()
    problems = []
    for key, _ in flatten(role, cfg[role]):
        if not key_known(key, table):
            problems.append(f"{name}: key {key} is not in known_keys[] of {os.path.relpath(src, repo)}")
            continue
        m = re.match(r"server\.node_attestors\.k8s_psat\.clusters\.([^.]+)\.(.+)$", key)
        if m:
            if m.group(2) not in psat:
                problems.append(f"{name}: key {key}: cluster setting {m.group(2)} is not in psat_keys[]")
            elif f"{m.group(2)}:" not in doc_text:
                problems.append(f"{name}: key {key}: cluster setting {m.group(2)} is not in docs/server.md")
            continue
        if not key_known(key, documented):
            problems.append(f"{name}: key {key} is not in the tables of docs/{role}.md")
    return problems


def binary_config_problems(binary, role, text, workdir):
    """Runs `<binary> run -config F` so that it stops at the data dir: exit 1 with a
    data-directory error means the config file was accepted; exit 2 that it was refused."""
    d = tempfile.mkdtemp(dir=workdir)
    cfg = os.path.join(d, f"{role}.yaml")
    with open(cfg, "w") as f:
        f.write(text)
    blocker = os.path.join(d, "file")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    args = [binary, "run", "-config", cfg, "-dataDir", os.path.join(blocker, "data"),
            "-socketPath", os.path.join(d, "s", "api.sock")]
    env = dict(os.environ)
    if role == "server":
        args += ["-bindAddress", "127.0.0.1", "-serverPort", "0"]
    else:
        env["MY_NODE_NAME"] = "node-1"
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=d)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return [f"{role}.yaml: {os.path.basename(binary)} run did not stop at the data dir: {err.strip()[-300:]}"]
    last = (err.strip().splitlines() or [""])[-1]
    if p.returncode == 1 and "data directory" in last:
        return []
    return [f"{role}.yaml: {os.path.basename(binary)} run -config: exit {p.returncode}: {last}"]


# ---------------------------------------------------------- 4. our own rules

def find(objects, kind, name=None):
    return [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"].get("name") == name)]


def pod_spec(o):
    if o.get("kind") == "Pod":
        return o.get("spec") or {}
    return ((o.get("spec") or {}).get("template") or {}).get("spec") or {}


def pod_meta(o):
    if o.get("kind") == "Pod":
        return o.get("metadata") or {}
    return ((o.get("spec") or {}).get("template") or {}).get("metadata") or {}


def containers(o):
    ps = pod_spec(o)
    return (ps.get("initContainers") or []) + (ps.get("containers") or [])


def daemon_role(c):
    """'server' / 'agent' for a container running a Lanyard daemon, else None."""
    cmd = (c.get("command") or []) + (c.get("args") or [])
    if len(cmd) >= 2 and cmd[1] == "run" and cmd[0] in ("lanyard-server", "lanyard-agent"):
        return cmd[0].split("-")[1]
    return None


def config_arg(c):
    cmd = (c.get("command") or []) + (c.get("args") or [])
    for i, a in enumerate(cmd):
        if a in ("-config", "--config") and i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def under(path, mount, strict=False):
    path, mount = posixpath.normpath(path), posixpath.normpath(mount)
    if path == mount:
        return not strict
    return path.startswith(mount.rstrip("/") + "/")


def mount_for(c, path, strict=False):
    """The deepest volumeMount holding `path` (or None)."""
    best = None
    for m in c.get("volumeMounts") or []:
        if under(path, m["mountPath"], strict) and (best is None or len(m["mountPath"]) > len(best["mountPath"])):
            best = m
    return best


def volume(o, name):
    for v in pod_spec(o).get("volumes") or []:
        if v.get("name") == name:
            return v
    if o.get("kind") == "StatefulSet":
        for t in o["spec"].get("volumeClaimTemplates") or []:
            if t["metadata"].get("name") == name:
                return {"name": name, "persistentVolumeClaim": {"claimName": name}}
    return None


def sc_value(c, o, key):
    """A securityContext field, the container's winning over the pod's."""
    csc = c.get("securityContext") or {}
    if key in csc:
        return csc[key]
    return (pod_spec(o).get("securityContext") or {}).get(key)


def rbac_rules_for_sa(objects, ns, sa):
    rules = []
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", None)):
        for b in find(objects, kind):
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and s.get("namespace") == ns
                       for s in b.get("subjects") or []):
                continue
            ref = b.get("roleRef") or {}
            rk = role_kind or ref.get("kind")
            for r in find(objects, rk, ref.get("name")):
                rules += r.get("rules") or []
    return rules


def allows(rules, group, resource, verb):
    for r in rules:
        if group in (r.get("apiGroups") or []) and resource in (r.get("resources") or []) \
                and (verb in (r.get("verbs") or []) or "*" in (r.get("verbs") or [])):
            return True
    return False


def configs(objects, problems):
    """{'server.yaml': (parsed, text, configmap), 'agent.yaml': ...} from the ConfigMaps."""
    out = {}
    for cm in find(objects, "ConfigMap"):
        for k, text in (cm.get("data") or {}).items():
            if k in ("server.yaml", "agent.yaml"):
                try:
                    out[k] = (yaml.safe_load(text), text, cm)
                except yaml.YAMLError as e:
                    problems.append(f"ConfigMap {cm['metadata']['name']}: {k}: {e}")
    return out


def rule_problems(objects):
    P = []
    cfgs = configs(objects, P)
    if "server.yaml" not in cfgs or "agent.yaml" not in cfgs:
        P.append("a ConfigMap with server.yaml and one with agent.yaml are needed")
        return P
    scfg = (cfgs["server.yaml"][0] or {}).get("server") or {}
    acfg = (cfgs["agent.yaml"][0] or {}).get("agent") or {}
    names = {o["kind"]: set() for o in objects}
    for o in objects:
        names[o["kind"]].add(o["metadata"].get("name"))

    daemons = {}
    for o in objects:
        if o.get("kind") not in WORKLOAD_KINDS:
            continue
        ps = pod_spec(o)
        ns = o["metadata"].get("namespace")
        where = f"{o['kind']}/{o['metadata']['name']}"
        sa = ps.get("serviceAccountName", "default")
        if sa != "default" and sa not in names.get("ServiceAccount", set()):
            P.append(f"{where}: serviceAccountName {sa} is not defined")
        for v in ps.get("volumes") or []:
            cmn = (v.get("configMap") or {}).get("name")
            if cmn and cmn not in names.get("ConfigMap", set()) and cmn not in EXTERNAL_CONFIGMAPS:
                P.append(f"{where}: volume {v['name']}: ConfigMap {cmn} is not defined")
            sn = (v.get("secret") or {}).get("secretName")
            if sn and sn not in names.get("Secret", set()) and sn not in EXTERNAL_SECRETS:
                P.append(f"{where}: volume {v['name']}: Secret {sn} is not defined")
        for c in containers(o):
            for e in c.get("env") or []:
                sk = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                if sk and sk not in names.get("Secret", set()) and sk not in EXTERNAL_SECRETS:
                    P.append(f"{where} container {c.get('name')}: env {e.get('name')}: Secret {sk} is not defined")
        for c in containers(o):
            cw = f"{where} container {c.get('name')}"
            role = daemon_role(c)
            if role:
                daemons[role] = (o, c)
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    P.append(f"{cw}: no {probe}")
            if sc_value(c, o, "allowPrivilegeEscalation") is not False:
                P.append(f"{cw}: securityContext.allowPrivilegeEscalation must be false")
            if sc_value(c, o, "readOnlyRootFilesystem") is not True:
                P.append(f"{cw}: securityContext.readOnlyRootFilesystem must be true")
            if sc_value(c, o, "privileged"):
                P.append(f"{cw}: must not be privileged")
            caps = (c.get("securityContext") or {}).get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                P.append(f"{cw}: securityContext.capabilities.drop must hold ALL")
            if caps.get("add"):
                P.append(f"{cw}: securityContext.capabilities.add must be empty (has {caps['add']})")
            if (sc_value(c, o, "seccompProfile") or {}).get("type") != "RuntimeDefault":
                P.append(f"{cw}: seccompProfile.type must be RuntimeDefault")
            if role != "agent":
                if sc_value(c, o, "runAsNonRoot") is not True:
                    P.append(f"{cw}: runAsNonRoot must be true (only the agent runs as root)")
                if sc_value(c, o, "runAsUser") in (None, 0):
                    P.append(f"{cw}: runAsUser must be a non-zero uid")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        P.append(f"{cw}: resources.{part}.{r} missing")
            if not c.get("image"):
                P.append(f"{cw}: no image")
            for m in c.get("volumeMounts") or []:
                if volume(o, m["name"]) is None:
                    P.append(f"{cw}: volumeMount {m['name']} has no volume")
            # Workloads of the Workload API: the socket as the agent serves it.
            for e in c.get("env") or []:
                if e.get("name") == "SPIFFE_ENDPOINT_SOCKET" and role is None:
                    sock = acfg.get("socket_path")
                    if e.get("value") != f"unix://{sock}":
                        P.append(f"{cw}: SPIFFE_ENDPOINT_SOCKET={e.get('value')} but the agent serves unix://{sock}")
                    sdir = posixpath.dirname(sock or "")
                    m = mount_for(c, sock or "/")
                    v = volume(o, m["name"]) if m else None
                    if not m or not v or (v.get("hostPath") or {}).get("path") != sdir or m["mountPath"] != sdir:
                        P.append(f"{cw}: must mount the hostPath {sdir} at {sdir}")
                    elif m.get("readOnly") is not True:
                        P.append(f"{cw}: the socket directory mount should be readOnly")
                    if ps.get("hostPID"):
                        P.append(f"{where}: a workload must not use hostPID")

    for role in ("server", "agent"):
        if role not in daemons:
            P.append(f"no container runs lanyard-{role} run")
    if P and any(r not in daemons for r in ("server", "agent")):
        return P

    # Both daemons: config mounted, probes on the health listener, metrics annotations.
    for role, cfg, fname in (("server", scfg, "server.yaml"), ("agent", acfg, "agent.yaml")):
        o, c = daemons[role]
        cw = f"{o['kind']}/{o['metadata']['name']} container {c['name']}"
        cpath = config_arg(c)
        m = mount_for(c, cpath or "/nonexistent")
        v = volume(o, m["name"]) if m else None
        if not cpath or not m or not v or (v.get("configMap") or {}).get("name") != cfgs[fname][2]["metadata"]["name"] \
                or posixpath.basename(cpath) != fname:
            P.append(f"{cw}: -config must be {fname} from ConfigMap {cfgs[fname][2]['metadata']['name']}")
        hc = cfg.get("health_checks") or {}
        if hc.get("listener_enabled") is not True:
            P.append(f"{fname}: health_checks.listener_enabled must be true (the probes use it)")
        if hc.get("bind_address", "127.0.0.1") not in ("0.0.0.0", "::"):
            P.append(f"{fname}: health_checks.bind_address must be 0.0.0.0 (the kubelet probes the pod IP)")
        port = hc.get("bind_port", HEALTH_PORT)
        for probe, key, dflt in (("livenessProbe", "live_path", "/live"), ("readinessProbe", "ready_path", "/ready")):
            hg = (c.get(probe) or {}).get("httpGet")
            if not hg:
                P.append(f"{cw}: {probe} must be httpGet")
                continue
            if hg.get("port") != port or hg.get("path") != hc.get(key, dflt):
                P.append(f"{cw}: {probe} must GET port {port} {hc.get(key, dflt)} "
                         f"(has {hg.get('port')} {hg.get('path')})")
        if port not in [p.get("containerPort") for p in c.get("ports") or []]:
            P.append(f"{cw}: containerPort {port} (health and metrics) not declared")
        ann = pod_meta(o).get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port) \
                or ann.get("prometheus.io/path", "/metrics") != "/metrics":
            P.append(f"{cw}: pod annotations prometheus.io/scrape \"true\", port \"{port}\", path /metrics needed")
        # readOnlyRootFilesystem: what the daemon writes must be on a writable volume.
        for key in ("data_dir", "socket_path"):
            path = cfg.get(key)
            if not path:
                P.append(f"{fname}: {key} must be set (the default is not on a volume)")
                continue
            wm = mount_for(c, path, strict=(key == "socket_path"))
            if not wm or wm.get("readOnly"):
                P.append(f"{cw}: {key} {path} is not on a writable volume (read-only root filesystem)")

    # The server.
    so, sc = daemons["server"]
    sw = f"{so['kind']}/{so['metadata']['name']}"
    sns = so["metadata"].get("namespace")
    replicas = so["spec"].get("replicas", 1)
    if so["kind"] != "StatefulSet" or not isinstance(replicas, int) or replicas < 1:
        P.append(f"{sw}: the server must be a StatefulSet with at least 1 replica")
    ds = scfg.get("datastore") or {}
    if isinstance(replicas, int) and replicas > 1:
        # SPEC §10: several servers are one trust domain only on one shared PostgreSQL database.
        if ds.get("database_type") != "postgres" or not ds.get("connection_string"):
            P.append(f"{sw}: {replicas} replicas need server.datastore.database_type postgres with a "
                     f"connection_string (SQLite is one file per replica: as many trust domains)")
        if re.search(r"(^|\s)password\s*=", ds.get("connection_string") or ""):
            P.append("server.yaml: the connection_string holds a password: give it from a Secret (PGPASSWORD)")
    # The agents reach every replica: the StatefulSet's Service is headless (one address per server).
    ssvc = [s for s in find(objects, "Service", so["spec"].get("serviceName"))
            if s["metadata"].get("namespace") == sns]
    if not ssvc:
        P.append(f"{sw}: serviceName {so['spec'].get('serviceName')} is not a Service of its namespace")
    elif isinstance(replicas, int) and replicas > 1 and (ssvc[0].get("spec") or {}).get("clusterIP") != "None":
        P.append(f"Service {ssvc[0]['metadata']['name']}: must be headless (clusterIP: None) with {replicas} "
                 f"server replicas, so that agents see every server (SPEC §10)")
    dm = mount_for(sc, scfg.get("data_dir") or "/", strict=True)
    if not dm or not (volume(so, dm["name"]) or {}).get("persistentVolumeClaim"):
        P.append(f"{sw}: data_dir {scfg.get('data_dir')} must be a subdirectory of a PersistentVolumeClaim mount")
    psc = pod_spec(so).get("securityContext") or {}
    if not psc.get("fsGroup"):
        P.append(f"{sw}: pod securityContext.fsGroup needed (the volume must be writable by the server's uid)")
    if str(scfg.get("server_port", 8081)) not in [str(p.get("containerPort")) for p in sc.get("ports") or []]:
        P.append(f"{sw}: containerPort {scfg.get('server_port', 8081)} (agent API) not declared")
    srules = rbac_rules_for_sa(objects, sns, pod_spec(so).get("serviceAccountName"))
    for grp, res, verb in (("authentication.k8s.io", "tokenreviews", "create"), ("", "pods", "get"),
                           ("", "nodes", "get")):
        if not allows(srules, grp, res, verb):
            P.append(f"{sw}: its service account may not {verb} {res} ({grp or 'core'}): k8s_psat needs it")

    # The agent.
    ao, ac = daemons["agent"]
    aw = f"{ao['kind']}/{ao['metadata']['name']}"
    ans = ao["metadata"].get("namespace")
    aps = pod_spec(ao)
    if ao["kind"] != "DaemonSet":
        P.append(f"{aw}: the agent must be a DaemonSet")
    if aps.get("hostPID") is not True:
        P.append(f"{aw}: hostPID must be true (callers' PIDs must be visible)")
    if acfg.get("socket_path") != SOCKET_PATH:
        P.append(f"agent.yaml: socket_path must be {SOCKET_PATH} (SPEC §2)")
    sdir = posixpath.dirname(acfg.get("socket_path") or "")
    m = mount_for(ac, acfg.get("socket_path") or "/", strict=True)
    v = volume(ao, m["name"]) if m else None
    hp = (v or {}).get("hostPath") or {}
    if not m or m["mountPath"] != sdir or hp.get("path") != sdir or hp.get("type") != "DirectoryOrCreate":
        P.append(f"{aw}: the socket directory {sdir} must be a hostPath {sdir} (DirectoryOrCreate) mounted there")
    # k8s_psat: the agent's cluster, token and audience against the server's config.
    apsat = (acfg.get("node_attestor") or {}).get("k8s_psat")
    clusters = (((scfg.get("node_attestors") or {}).get("k8s_psat") or {}).get("clusters")) or {}
    if not apsat:
        P.append("agent.yaml: node_attestor.k8s_psat is needed")
    else:
        cl = clusters.get(apsat.get("cluster"))
        if cl is None:
            P.append(f"agent.yaml: k8s_psat cluster {apsat.get('cluster')} is not among the server's "
                     f"({sorted(clusters)})")
            cl = {}
        else:
            allow = cl.get("service_account_allow_list") or []
            if f"{ans}:{aps.get('serviceAccountName')}" not in allow:
                P.append(f"server.yaml: service_account_allow_list {allow} lacks the agent's "
                         f"{ans}:{aps.get('serviceAccountName')}")
        audience = cl.get("audience", PSAT_AUDIENCE_DEFAULT)
        tpath = apsat.get("token_path", PSAT_TOKEN_DEFAULT)
        tm = mount_for(ac, tpath, strict=True)
        tv = volume(ao, tm["name"]) if tm else None
        srcs = [s.get("serviceAccountToken") for s in ((tv or {}).get("projected") or {}).get("sources") or []
                if s.get("serviceAccountToken")]
        rel = posixpath.relpath(tpath, tm["mountPath"]) if tm else None
        tok = [s for s in srcs if s.get("path") == rel]
        if not tok:
            P.append(f"{aw}: no projected serviceAccountToken at {tpath} (agent.yaml token_path)")
        else:
            if tok[0].get("audience") != audience:
                P.append(f"{aw}: projected token audience {tok[0].get('audience')} but the server's "
                         f"k8s_psat audience is {audience}")
            if not tok[0].get("expirationSeconds"):
                P.append(f"{aw}: the projected token needs an expirationSeconds")
    if scfg.get("trust_domain") != acfg.get("trust_domain"):
        P.append(f"trust_domain differs: server {scfg.get('trust_domain')} agent {acfg.get('trust_domain')}")
    # The agent reaches the server's Service (one name; agent/servers.h takes a list).
    addr = acfg.get("server_address", "")
    svc_ok = False
    for s in find(objects, "Service"):
        sn, sns2 = s["metadata"]["name"], s["metadata"].get("namespace")
        if addr not in (f"{sn}.{sns2}.svc", f"{sn}.{sns2}.svc.cluster.local"):
            continue
        sel = (s.get("spec") or {}).get("selector") or {}
        labels = pod_meta(so).get("labels") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            P.append(f"Service {sn}: its selector does not pick the server's pods")
        if (s.get("spec") or {}).get("clusterIP") == "None":
            # Headless: the name gives the pods' addresses, the agent connects to server_port on each.
            if acfg.get("server_port", 8081) == scfg.get("server_port", 8081):
                svc_ok = True
            continue
        for p in (s.get("spec") or {}).get("ports") or []:
            if p.get("port") == acfg.get("server_port", 8081):
                tp = p.get("targetPort", p.get("port"))
                cports = {x.get("name"): x.get("containerPort") for x in sc.get("ports") or []}
                if cports.get(tp, tp) == scfg.get("server_port", 8081):
                    svc_ok = True
    if not svc_ok:
        P.append(f"agent.yaml: server_address {addr}:{acfg.get('server_port', 8081)} is not a Service "
                 f"port that reaches the server's agent API")
    bundle = acfg.get("trust_bundle_path")
    if bundle and not mount_for(ac, bundle, strict=True):
        P.append(f"{aw}: trust_bundle_path {bundle} is on no volume")
    k8s = (acfg.get("workload_attestors") or {}).get("k8s")
    if k8s is not None and "node_name" not in (k8s or {}):
        envname = (k8s or {}).get("node_name_env", NODE_NAME_ENV_DEFAULT)
        ev = [e for e in ac.get("env") or [] if e.get("name") == envname]
        if not ev or ((ev[0].get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "spec.nodeName":
            P.append(f"{aw}: env {envname} must come from the downward API (fieldRef spec.nodeName)")
    arules = rbac_rules_for_sa(objects, ans, aps.get("serviceAccountName"))
    for res, verb in (("nodes/proxy", "get"), ("pods", "get"), ("pods", "list"), ("nodes", "get")):
        if not allows(arules, "", res, verb):
            P.append(f"{aw}: its service account may not {verb} {res}")
    return P


# ------------------------------------------------------------ 6. alert rules

ALERT_SEVERITIES = {"critical", "warning", "info"}
PROM_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
GROUP_KEYS = {"name", "interval", "rules", "limit", "partial_response_strategy"}
# What issue 16 asks the rules to watch: every one of these is in some alert.
REQUIRED_ALERT_METRICS = {
    "lanyard_server_node_attestations_total": "attestation failures",
    "lanyard_server_rate_limited_total": "signing refusals",
    "lanyard_agent_svid_issue_failures_total": "rotation failures",
    "lanyard_agent_server_reachable": "an agent that cannot reach any server",
    "lanyard_server_ca_signing_expiry_timestamp_seconds": "a CA nearing expiry",
}


def exported_metrics(repo):
    """{name: type} of every metric family the daemons declare (FAMILY(...) / ly_metrics_add(...) in
    server/, agent/, rpc/): what /metrics can show."""
    out = {}
    pat = re.compile(r'(?:FAMILY\(\s*\w+\s*,\s*|ly_metrics_add\(\s*[^,()]+,\s*)(LY_METRIC_\w+)\s*,\s*"([a-zA-Z_:][\w:]*)"')
    for sub in ("server", "agent", "rpc"):
        for root, _, files in os.walk(os.path.join(repo, sub)):
            for fn in files:
                if fn.endswith(".c"):
                    with open(os.path.join(root, fn)) as f:
                        for typ, name in pat.findall(f.read()):
                            out[name] = typ
    return out


def expr_metrics(expr):
    """The metric names of a PromQL expression (ours: lanyard_*, process_*), outside label matchers' values."""
    no_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\b((?:lanyard|process)_[A-Za-z0-9_:]*)", no_strings))


def balanced(expr):
    depth = {"(": 0, "[": 0, "{": 0}
    close = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in close:
            depth[close[ch]] -= 1
            if depth[close[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def alert_docs(k8s_dir, problems):
    """[(file, document)] of k8s/monitoring/*.yaml."""
    d = os.path.join(k8s_dir, "monitoring")
    out = []
    if not os.path.isdir(d):
        problems.append("k8s/monitoring/: missing (the PrometheusRule with Lanyard's alerts)")
        return out
    for fn in sorted(os.listdir(d)):
        if not fn.endswith((".yaml", ".yml")):
            continue
        try:
            with open(os.path.join(d, fn)) as f:
                out += [(fn, x) for x in yaml.safe_load_all(f) if x is not None]
        except (OSError, yaml.YAMLError) as e:
            problems.append(f"monitoring/{fn}: {e}")
    return out


def alert_problems(docs, known):
    """Problems of the PrometheusRule documents `docs` ([(file, doc)]) given the exported metrics `known`."""
    P = []
    seen_alerts, used = set(), set()
    if not docs:
        P.append("k8s/monitoring/: no PrometheusRule")
    for fn, doc in docs:
        where = f"monitoring/{fn}"
        if not isinstance(doc, dict) or doc.get("apiVersion") != "monitoring.coreos.com/v1" \
                or doc.get("kind") != "PrometheusRule":
            P.append(f"{where}: must be apiVersion monitoring.coreos.com/v1, kind PrometheusRule")
            continue
        extra = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
        if extra:
            P.append(f"{where}: unknown top-level fields {sorted(extra)}")
        if not (doc.get("metadata") or {}).get("name"):
            P.append(f"{where}: metadata.name missing")
        spec = doc.get("spec") or {}
        if set(spec) - {"groups"}:
            P.append(f"{where}: unknown spec fields {sorted(set(spec) - {'groups'})}")
        groups = spec.get("groups")
        if not isinstance(groups, list) or not groups:
            P.append(f"{where}: spec.groups must be a non-empty list")
            continue
        for g in groups:
            gw = f"{where} group {g.get('name') if isinstance(g, dict) else g!r}"
            if not isinstance(g, dict) or not isinstance(g.get("name"), str) or not isinstance(g.get("rules"), list):
                P.append(f"{gw}: a group needs a name and a list of rules")
                continue
            if set(g) - GROUP_KEYS:
                P.append(f"{gw}: unknown fields {sorted(set(g) - GROUP_KEYS)}")
            if "interval" in g and not PROM_DURATION.match(str(g["interval"])):
                P.append(f"{gw}: interval {g['interval']!r} is not a Prometheus duration")
            for r in g["rules"]:
                if not isinstance(r, dict):
                    P.append(f"{gw}: a rule that is not a mapping")
                    continue
                rw = f"{gw} rule {r.get('alert') or r.get('record')}"
                if set(r) - RULE_KEYS:
                    P.append(f"{rw}: unknown fields {sorted(set(r) - RULE_KEYS)}")
                if ("alert" in r) == ("record" in r):
                    P.append(f"{rw}: exactly one of alert and record")
                expr = r.get("expr")
                if not isinstance(expr, str) or not expr.strip():
                    P.append(f"{rw}: expr must be a non-empty string")
                    continue
                if not balanced(expr):
                    P.append(f"{rw}: unbalanced brackets in expr")
                names = expr_metrics(expr)
                if not names:
                    P.append(f"{rw}: expr names no Lanyard metric")
                for n in sorted(names):
                    base = re.sub(r"_(bucket|sum|count)$", "", n)
                    if n in known or (base in known and known[base] == "LY_METRIC_HISTOGRAM"):
                        used.add(n if n in known else base)
                    else:
                        P.append(f"{rw}: metric {n} is not exported by lanyard-server or lanyard-agent")
                for k in ("for", "keep_firing_for"):
                    if k in r and not PROM_DURATION.match(str(r[k])):
                        P.append(f"{rw}: {k} {r[k]!r} is not a Prometheus duration")
                if "alert" in r:
                    if r["alert"] in seen_alerts:
                        P.append(f"{rw}: alert name used twice")
                    seen_alerts.add(r["alert"])
                    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(r["alert"])):
                        P.append(f"{rw}: alert name is not a Prometheus label value for alertname")
                    if (r.get("labels") or {}).get("severity") not in ALERT_SEVERITIES:
                        P.append(f"{rw}: labels.severity must be one of {sorted(ALERT_SEVERITIES)}")
                    ann = r.get("annotations") or {}
                    for a in ("summary", "description"):
                        if not isinstance(ann.get(a), str) or not ann[a].strip():
                            P.append(f"{rw}: annotations.{a} missing")
    for m, what in sorted(REQUIRED_ALERT_METRICS.items()):
        if m not in known:
            P.append(f"{m} ({what}) is no longer exported: update REQUIRED_ALERT_METRICS and the alerts")
        elif m not in used:
            P.append(f"no alert watches {what} ({m})")
    return P


# ---------------------------------------------------------------- the checks

def check_all(repo, k8s_dir, node_dir, bins, workdir):
    """Every stage on one k8s directory: {stage: [problems]}."""
    out = {}
    out["yamllint"] = run_yamllint(k8s_dir)
    rp = []
    objects, _ = resolve(k8s_dir, rp)
    out["kustomize"] = rp
    kk = kubectl_kustomize(k8s_dir, objects) if not rp else None
    out["kubectl-kustomize"] = kk
    out["schema"] = schema_problems(node_dir, objects) if objects else ["no objects"]
    out["rules"] = rule_problems(objects)
    cp, bp = [], []
    for name, (parsed, text, _) in configs(objects, cp).items():
        cp += config_key_problems(repo, name, parsed)
        role = name.split(".")[0]
        if bins.get(role):
            bp += binary_config_problems(bins[role], role, text, workdir)
    out["config-keys"] = cp
    out["config-binaries"] = bp if bins else None
    ap = []
    docs = alert_docs(k8s_dir, ap)
    out["alerts"] = ap + alert_problems(docs, exported_metrics(repo))
    return objects, out


def mutate_config(objects, name, fn):
    for cm in find(objects, "ConfigMap"):
        if name in (cm.get("data") or {}):
            cfg = yaml.safe_load(cm["data"][name])
            fn(cfg)
            cm["data"][name] = yaml.safe_dump(cfg, sort_keys=False)
            return
    raise KeyError(name)


def daemon(objects, role):
    for o in objects:
        for c in containers(o) if o.get("kind") in WORKLOAD_KINDS else []:
            if daemon_role(c) == role:
                return o, c
    raise KeyError(role)


def workload(objects):
    o = find(objects, "Deployment", "example-workload")[0]
    return o, pod_spec(o)["containers"][0]


def ann_del(o, key):
    del pod_meta(o)["annotations"][key]


OBJECT_MUTATIONS = [
    # (name, stage that must reject it, mutation of the resolved objects)
    ("schema: hostPID given as the string \"true\"", "schema",
     lambda ob: pod_spec(daemon(ob, "agent")[0]).__setitem__("hostPID", "true")),
    ("schema: misspelt field imagee", "schema",
     lambda ob: daemon(ob, "server")[1].__setitem__("imagee", "lanyard:dev")),
    ("schema: misspelt metadata field lables", "schema",
     lambda ob: find(ob, "Service")[0]["metadata"].__setitem__("lables", {"a": "b"})),
    ("schema: container without its required name", "schema",
     lambda ob: daemon(ob, "agent")[1].pop("name")),
    ("schema: probe port given as a list", "schema",
     lambda ob: daemon(ob, "server")[1]["livenessProbe"]["httpGet"].__setitem__("port", [8080])),
    ("schema: replicas given as a string", "schema",
     lambda ob: daemon(ob, "server")[0]["spec"].__setitem__("replicas", "1")),
    ("schema: ClusterRole rule verbs as a string", "schema",
     lambda ob: find(ob, "ClusterRole", "lanyard-server")[0]["rules"][0].__setitem__("verbs", "create")),
    ("rules: agent without a readinessProbe", "rules",
     lambda ob: daemon(ob, "agent")[1].pop("readinessProbe")),
    ("rules: workload without a livenessProbe", "rules",
     lambda ob: workload(ob)[1].pop("livenessProbe")),
    ("rules: server liveness probe on the wrong path", "rules",
     lambda ob: daemon(ob, "server")[1]["livenessProbe"]["httpGet"].__setitem__("path", "/healthz")),
    ("rules: allowPrivilegeEscalation true", "rules",
     lambda ob: daemon(ob, "server")[1]["securityContext"].__setitem__("allowPrivilegeEscalation", True)),
    ("rules: writable root filesystem", "rules",
     lambda ob: workload(ob)[1]["securityContext"].__setitem__("readOnlyRootFilesystem", False)),
    ("rules: capabilities not dropped", "rules",
     lambda ob: daemon(ob, "agent")[1]["securityContext"]["capabilities"].__setitem__("drop", ["NET_RAW"])),
    ("rules: a capability added", "rules",
     lambda ob: daemon(ob, "agent")[1]["securityContext"]["capabilities"].__setitem__("add", ["SYS_PTRACE"])),
    ("rules: seccomp Unconfined", "rules",
     lambda ob: daemon(ob, "server")[1]["securityContext"]["seccompProfile"].__setitem__("type", "Unconfined")),
    ("rules: server may run as root", "rules",
     lambda ob: (daemon(ob, "server")[1]["securityContext"].pop("runAsNonRoot"),
                 pod_spec(daemon(ob, "server")[0])["securityContext"].pop("runAsNonRoot"))),
    ("rules: no memory limit", "rules",
     lambda ob: daemon(ob, "agent")[1]["resources"]["limits"].pop("memory")),
    ("rules: agent without hostPID", "rules",
     lambda ob: pod_spec(daemon(ob, "agent")[0]).__setitem__("hostPID", False)),
    ("rules: agent socket hostPath elsewhere", "rules",
     lambda ob: [v["hostPath"].__setitem__("path", "/run/spire/sockets")
                 for v in pod_spec(daemon(ob, "agent")[0])["volumes"] if v["name"] == "sockets"]),
    ("rules: projected token audience differs from the server's", "rules",
     lambda ob: [v["projected"]["sources"][0]["serviceAccountToken"].__setitem__("audience", "spire-server")
                 for v in pod_spec(daemon(ob, "agent")[0])["volumes"] if v["name"] == "psat-token"]),
    ("rules: server's k8s_psat audience differs from the token's", "rules",
     lambda ob: mutate_config(ob, "server.yaml", lambda c: c["server"]["node_attestors"]["k8s_psat"]["clusters"]
                              ["demo-cluster"].__setitem__("audience", "other"))),
    ("rules: agent's cluster unknown to the server", "rules",
     lambda ob: mutate_config(ob, "agent.yaml",
                              lambda c: c["agent"]["node_attestor"]["k8s_psat"].__setitem__("cluster", "prod"))),
    ("rules: allow list without the agent's service account", "rules",
     lambda ob: mutate_config(ob, "server.yaml", lambda c: c["server"]["node_attestors"]["k8s_psat"]["clusters"]
                              ["demo-cluster"].__setitem__("service_account_allow_list", ["spire:spire-agent"]))),
    ("rules: projected token not where token_path points", "rules",
     lambda ob: mutate_config(ob, "agent.yaml", lambda c: c["agent"]["node_attestor"]["k8s_psat"]
                              .__setitem__("token_path", "/var/run/secrets/tokens/other"))),
    ("rules: node name not from the downward API", "rules",
     lambda ob: daemon(ob, "agent")[1].pop("env")),
    ("rules: workload's SPIFFE_ENDPOINT_SOCKET elsewhere", "rules",
     lambda ob: workload(ob)[1]["env"][0].__setitem__("value", "unix:///tmp/agent.sock")),
    ("rules: workload without the socket hostPath", "rules",
     lambda ob: pod_spec(workload(ob)[0]).__setitem__(
         "volumes", [{"name": "lanyard-sockets", "emptyDir": {}}])),
    ("rules: server's ClusterRole without tokenreviews create", "rules",
     lambda ob: find(ob, "ClusterRole", "lanyard-server")[0]["rules"].pop(0)),
    ("rules: agent's ClusterRole without nodes/proxy", "rules",
     lambda ob: find(ob, "ClusterRole", "lanyard-agent")[0]["rules"][1].__setitem__("resources", ["nodes"])),
    ("rules: no prometheus.io/scrape annotation", "rules",
     lambda ob: ann_del(daemon(ob, "agent")[0], "prometheus.io/scrape")),
    ("rules: health listener off", "rules",
     lambda ob: mutate_config(ob, "agent.yaml",
                              lambda c: c["agent"]["health_checks"].__setitem__("listener_enabled", False))),
    ("rules: server data_dir off the PersistentVolume", "rules",
     lambda ob: mutate_config(ob, "server.yaml", lambda c: c["server"].__setitem__("data_dir", "/data"))),
    ("rules: agent's server_address names no Service", "rules",
     lambda ob: mutate_config(ob, "agent.yaml",
                              lambda c: c["agent"].__setitem__("server_address", "spire-server.spire.svc"))),
    ("rules: several server replicas on SQLite", "rules",
     lambda ob: mutate_config(ob, "server.yaml", lambda c: c["server"].pop("datastore"))),
    ("rules: a password in the connection string", "rules",
     lambda ob: mutate_config(ob, "server.yaml", lambda c: c["server"]["datastore"].__setitem__(
         "connection_string", "host=db dbname=lanyard user=lanyard password=hunter2"))),
    ("rules: several server replicas behind a virtual IP (not headless)", "rules",
     lambda ob: find(ob, "Service", "lanyard-server")[0]["spec"].pop("clusterIP")),
    ("rules: PGPASSWORD from a Secret nobody makes", "rules",
     lambda ob: daemon(ob, "server")[1]["env"][0]["valueFrom"]["secretKeyRef"].__setitem__("name", "pg-secret")),
    ("config-keys: misspelt server key data_dri", "config-keys",
     lambda ob: mutate_config(ob, "server.yaml", lambda c: c["server"].__setitem__("data_dri", "/x"))),
    ("config-keys: unknown agent key kubelet_port", "config-keys",
     lambda ob: mutate_config(ob, "agent.yaml",
                              lambda c: c["agent"]["workload_attestors"]["k8s"].__setitem__("kubelet_port", 1))),
    ("config-keys: unknown k8s_psat cluster setting", "config-keys",
     lambda ob: mutate_config(ob, "server.yaml", lambda c: c["server"]["node_attestors"]["k8s_psat"]["clusters"]
                              ["demo-cluster"].__setitem__("audiences", ["x"]))),
]

# Textual mutations of a copy of k8s/, through every stage: (name, stages any of which
# must reject it, file, old, new).
TEXT_MUTATIONS = [
    ("yamllint: trailing spaces", {"yamllint"}, "server-service.yaml", "type: ClusterIP", "type: ClusterIP   "),
    ("yamllint+schema: hostPID: yes", {"yamllint", "schema"}, "agent-daemonset.yaml",
     "hostPID: true", "hostPID: yes"),
    ("yamllint: duplicate key", {"yamllint"}, "server-statefulset.yaml", "  replicas: 3\n",
     "  replicas: 3\n  replicas: 2\n"),
    ("alerts: a metric no daemon exports", {"alerts"}, "monitoring/lanyard-alerts.yaml",
     "expr: lanyard_agent_server_reachable == 0", "expr: lanyard_agent_server_reached == 0"),
    ("alerts: a severity out of the set", {"alerts"}, "monitoring/lanyard-alerts.yaml",
     "severity: critical", "severity: page"),
    ("alerts: a duration Prometheus refuses", {"alerts", "yamllint"}, "monitoring/lanyard-alerts.yaml",
     "for: 10m", "for: 10 minutes"),
    ("alerts: unbalanced brackets", {"alerts"}, "monitoring/lanyard-alerts.yaml",
     "> 0.05", ") > 0.05"),
    ("alerts: the CA expiry alerts gone", {"alerts"}, "monitoring/lanyard-alerts.yaml",
     "(lanyard_server_ca_signing_expiry_timestamp_seconds > 0) - time() < 2 * 86400",
     "time() < 0"),
    ("kustomize: a resource file missing", {"kustomize"}, "kustomization.yaml", "  - agent-rbac.yaml\n",
     "  - agent-rbac.yaml\n  - nonexistent.yaml\n"),
    ("kustomize: a file not listed", {"kustomize"}, "kustomization.yaml", "  - example-workload.yaml\n", ""),
    ("schema: unknown field in a file", {"schema"}, "example-workload.yaml", "      serviceAccountName:",
     "      serviceAcountName: x\n      serviceAccountName:"),
]


def self_checks(repo, k8s_dir, node_dir, objects, base_out, bins, workdir):
    # Object mutations: one node run for all their schema checks.
    variants = []
    for name, stage, fn in OBJECT_MUTATIONS:
        ob = copy.deepcopy(objects)
        try:
            fn(ob)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            report(False, f"self-check {name}", f"cannot apply the mutation ({e!r}): manifests changed?")
            continue
        variants.append((name, stage, ob))
    flat, spans = [], []
    for _, _, ob in variants:
        spans.append((len(flat), len(flat) + len(ob)))
        flat += ob
    res = schema_check(node_dir, flat)

    def key_problems(ob):
        got = []
        for cname, (parsed, _, _) in configs(ob, got).items():
            got += config_key_problems(repo, cname, parsed)
        return got

    # Only a problem the unmutated objects do not have counts.
    base = {"rules": set(rule_problems(objects)), "config-keys": set(key_problems(objects))}
    for (name, stage, ob), (a, b) in zip(variants, spans):
        if stage == "schema":
            got = [e for i in range(a, b) for e in res.get(i, [])]
        elif stage == "rules":
            got = [p for p in rule_problems(ob) if p not in base["rules"]]
        else:
            got = [p for p in key_problems(ob) if p not in base["config-keys"]]
        report(bool(got), f"self-check {name}: rejected",
               "" if got else f"the {stage} stage accepted it")
        if got:
            print(f"       ({got[0][:160]})")
    # The real parsers refuse a misspelt key (exit 2).
    for role in ("server", "agent"):
        if not bins.get(role):
            continue
        ob = copy.deepcopy(objects)
        mutate_config(ob, f"{role}.yaml", lambda c: c[role].__setitem__("log_levle", "info"))
        text = [t for n, (_, t, _) in configs(ob, []).items() if n == f"{role}.yaml"][0]
        got = binary_config_problems(bins[role], role, text, workdir)
        report(bool(got) and "exit 2" in got[0], f"self-check lanyard-{role} refuses a misspelt key (exit 2)",
               "; ".join(got) or "accepted")
        if got:
            print(f"       ({got[0][:160]})")
    # Text mutations through the whole pipeline on a copy of k8s/.
    for name, stages, fname, old, new in TEXT_MUTATIONS:
        d = tempfile.mkdtemp(dir=workdir)
        copy_dir = os.path.join(d, "k8s")
        shutil.copytree(k8s_dir, copy_dir)
        p = os.path.join(copy_dir, fname)
        with open(p) as f:
            text = f.read()
        if old not in text:
            report(False, f"self-check {name}", f"{fname} no longer contains {old!r}: update the self-check")
            continue
        with open(p, "w") as f:
            f.write(text.replace(old, new, 1))
        _, out = check_all(repo, copy_dir, node_dir, {}, workdir)
        hit = {s: [p for p in v if p not in base_out.get(s, [])]
               for s, v in out.items() if s in stages and v}
        hit = {s: v for s, v in hit.items() if v}
        report(bool(hit), f"self-check {name}: rejected by {'/'.join(sorted(stages))}",
               "accepted by " + ", ".join(sorted(stages)))
        for s, v in hit.items():
            print(f"       ({s}: {v[0][:150]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--server-bin")
    ap.add_argument("--agent-bin")
    a = ap.parse_args()
    repo = os.path.abspath(a.repo)
    k8s_dir = os.path.join(repo, "k8s")
    node_dir = os.path.join(repo, "tests", "k8s")
    bins = {k: os.path.abspath(v) for k, v in (("server", a.server_bin), ("agent", a.agent_bin)) if v}

    missing = []
    if shutil.which("yamllint") is None:
        missing.append("yamllint (Debian package yamllint)")
    if shutil.which("node") is None:
        missing.append("node")
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "kubernetes-models")):
        missing.append("tests/k8s/node_modules (npm ci in tests/k8s)")
    report(not missing, "tools: yamllint, node, kubernetes-models",
           "missing: " + ", ".join(missing) + "\nrun scripts/install-deps.sh")
    if missing:
        return summary()

    workdir = tempfile.mkdtemp(prefix="lanyard-k8s-check-")
    try:
        objects, out = check_all(repo, k8s_dir, node_dir, bins, workdir)
        labels = {
            "yamllint": "yamllint -s (k8s/.yamllint)",
            "kustomize": "kustomization resolved (resources, namespace, no unlisted file)",
            "kubectl-kustomize": "kubectl kustomize agrees with our resolution",
            "schema": "Kubernetes 1.34 schemas (kubernetes-models): types, required, unknown fields",
            "rules": "Lanyard rules (probes, securityContext, resources, hostPID, socket, token, RBAC)",
            "config-keys": "server.yaml/agent.yaml keys in known_keys[] and in docs/server.md, docs/agent.md",
            "config-binaries": "lanyard-server and lanyard-agent accept the embedded configs",
            "alerts": "k8s/monitoring/ PrometheusRule: shape, durations, severities, coverage, every metric exported",
        }
        for stage, label in labels.items():
            v = out.get(stage)
            if v is None:
                skip(label, "kubectl not installed" if stage == "kubectl-kustomize" else
                     "no --server-bin/--agent-bin given")
                continue
            report(not v, label, "\n".join(v))
        print(f"     {len(objects)} objects: " + ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objects))
        if objects and not out["kustomize"]:
            self_checks(repo, k8s_dir, node_dir, objects, out, bins, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
