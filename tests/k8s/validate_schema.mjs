// Validates Kubernetes objects against the OpenAPI schemas of the
// Kubernetes release that the npm package kubernetes-models was generated
// from (kubernetes-models 5.1.0: Kubernetes 1.34), with ajv: types, required
// fields, enums, formats, int-or-string.
//
// The official schemas do not forbid unknown fields (a misspelt field would
// pass, and the API server would drop it with a warning), so each field is
// also probed: its value is replaced by [[]] (valid for no string, number,
// boolean, object, or array of scalars or objects), and a field whose
// replacement still validates is not in the schema: "unknown field".
//
// Input (stdin): a JSON array of objects. Output (stdout): a JSON array of
// {"index": i, "errors": ["path: message", ...]}, one per object.
// Used by tests/k8s/check_manifests.py; needs `npm ci` in tests/k8s.
import { readFileSync } from "node:fs";

const PROBE = [[]];

function modelPath(apiVersion, kind) {
  // "v1" -> "v1/Kind"; "apps/v1" -> "apps/v1/Kind"
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  if (!/^[A-Za-z0-9.\-/]+$/.test(apiVersion) || !/^[A-Za-z0-9]+$/.test(kind)) return null;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

function errorsOf(Model, data) {
  try {
    new Model(data).validate();
    return [];
  } catch (e) {
    if (Array.isArray(e.errors))
      return e.errors.map((x) => `${x.instancePath || "/"}: ${x.message}`);
    return [`${e.message}`];
  }
}

function clone(v) {
  return JSON.parse(JSON.stringify(v));
}

function setAt(root, path, value) {
  let o = root;
  for (let i = 0; i < path.length - 1; i++) o = o[path[i]];
  o[path[path.length - 1]] = value;
}

// Every object key below the root (apiVersion and kind are the model's own).
function* fieldPaths(v, path) {
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) yield* fieldPaths(v[i], path.concat([i]));
  } else if (v !== null && typeof v === "object") {
    for (const k of Object.keys(v)) {
      if (path.length === 0 && (k === "apiVersion" || k === "kind")) continue;
      const p = path.concat([k]);
      yield p;
      yield* fieldPaths(v[k], p);
    }
  }
}

function unknownFields(Model, obj) {
  const out = [];
  const unknown = [];
  for (const p of fieldPaths(obj, [])) {
    // Below a field already known to be unknown: nothing more to say.
    if (unknown.some((u) => u.length <= p.length && u.every((x, i) => x === p[i]))) continue;
    const probe = clone(obj);
    setAt(probe, p, PROBE);
    if (errorsOf(Model, probe).length === 0) {
      unknown.push(p);
      out.push(`/${p.join("/")}: unknown field "${p[p.length - 1]}" (not in the ${obj.kind} schema)`);
    }
  }
  return out;
}

const input = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (let i = 0; i < input.length; i++) {
  const obj = input[i];
  const mp = modelPath(obj && obj.apiVersion, obj && obj.kind);
  if (mp === null) {
    results.push({ index: i, errors: ["/: apiVersion and kind must be strings naming a Kubernetes type"] });
    continue;
  }
  let mod;
  try {
    mod = await import(mp);
  } catch (e) {
    results.push({ index: i, errors: [`/: no schema for apiVersion ${obj.apiVersion} kind ${obj.kind}`] });
    continue;
  }
  const Model = mod[obj.kind];
  if (typeof Model !== "function") {
    results.push({ index: i, errors: [`/: no schema for apiVersion ${obj.apiVersion} kind ${obj.kind}`] });
    continue;
  }
  let errors = errorsOf(Model, obj);
  if (errors.length === 0) errors = unknownFields(Model, obj);
  results.push({ index: i, errors });
}
process.stdout.write(JSON.stringify(results));
