#!/usr/bin/python3
"""callgraph-check.py: circles between the C files of some folders.

    callgraph-check.py [-v] [--known F1,F2...]... ROOT DIR...
                                             (e.g. callgraph-check.py . server agent)
    callgraph-check.py --self-test           (small trees with a known answer)

Reads the sources as text, as docs/architecture.md ("Circles") describes:
  - calls: a function one file defines (not static; the repo's style puts
    the name at the start of its line, the return type on the line
    before), or a `static inline` one a header defines, whose name another
    file uses (comments and string literals left out; a header's
    prototypes and other top-level declarations call nothing; a static
    function of the same name in the using file is its own). A header counts as
    the .c file of its own name when there is one (datastore.h is
    datastore.c's), otherwise as itself;
  - includes: a header that includes, directly or not, a header of DIR...
    that includes it back.
A circle is a set of files each reaching every other one: two files that
call each other, or a longer ring. Each is printed with the names that
make it, one edge a line:

    circle: server/a.c server/b.c
      server/a.c -> server/b.c: b_do, b_other
      server/b.c -> server/a.c: a_done

Exits 0 when there is none, 1 when there is one, 2 on bad usage. With -v,
also prints every edge between files. --known names a call circle left for
later by its files, exactly (comma-separated, as printed): it is printed as
known and does not fail the run; a file that joins it makes a new circle,
which does. Cheap (well under a second): ctest
runs it as lint.callgraph (tests/CMakeLists.txt).
"""
import os
import re
import sys

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEF_AT_LINE_START = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\(", re.M)
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def strip_text(src):
    """The source with comments, string and character literals blanked (newlines kept)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def definitions(text, header):
    """Names of the functions `text` defines: (for other files to call, its own static ones)."""
    names, own = set(), set()
    lines = text.split("\n")
    for m in DEF_AT_LINE_START.finditer(text):
        lineno = text.count("\n", 0, m.start())
        prev = lines[lineno - 1] if lineno > 0 else ""
        if m.group(1) in ("if", "for", "while", "switch", "return", "sizeof"):
            continue
        # The line before is the return type; a prototype's `;` or a
        # macro's line are not definitions.
        if not prev.strip() or prev.rstrip().endswith((";", "\\", ",", "{", "}")) or prev.startswith("#"):
            continue
        words = prev.split()
        if header:
            if "static" in words and "inline" in words:
                names.add(m.group(1))
        elif "static" not in words:
            names.add(m.group(1))
        else:
            own.add(m.group(1))
    return names, own


def header_uses(text):
    """The part of a header that can call: bodies of inline functions and
    macros. What stands at the top level (prototypes, typedefs, externs)
    only declares, and names nothing the header's users did not name."""
    out, depth = [], 0
    for line in text.split("\n"):
        if depth == 0 and line.lstrip().startswith("#"):
            if re.match(r"\s*#\s*define\b", line):
                out.append(line)
            continue
        kept = []
        for c in line:
            if c == "{":
                depth += 1
            elif c == "}":
                depth = max(0, depth - 1)
            elif depth > 0:
                kept.append(c)
            else:
                kept.append(" ")
        out.append("".join(kept))
    return "\n".join(out)


def node_of(path, files):
    """A header is the .c file of its name when there is one."""
    if path.endswith(".h"):
        c = path[:-2] + ".c"
        if c in files:
            return c
    return path


def scc(nodes, edges):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def report(kind, comps, why):
    for comp in comps:
        print("%s circle: %s" % (kind, " ".join(comp)))
        for a in comp:
            for b in comp:
                if (a, b) in why:
                    print("  %s -> %s: %s" % (a, b, ", ".join(sorted(why[(a, b)]))))


# --self-test: small trees with a known answer, so that a checker that
# silently finds nothing cannot pass lint.callgraph.
SELF_TESTS = [
    # (files, expected circles as "kind:file file...", --known options)
    ({"x/a.c": "int\nfoo(void)\n{\n\treturn bar();\n}\n",
      "x/b.c": "int\nbar(void)\n{\n\treturn foo();\n}\n"},
     ["call:x/a.c x/b.c"], []),
    # The same, known: printed, not failed.
    ({"x/a.c": "int\nfoo(void)\n{\n\treturn bar();\n}\n",
      "x/b.c": "int\nbar(void)\n{\n\treturn foo();\n}\n"},
     ["known call:x/a.c x/b.c"], ["--known", "x/b.c,x/a.c"]),
    # A third file joins a known circle: a new one.
    ({"x/a.c": "int\nfoo(void)\n{\n\treturn bar();\n}\n",
      "x/b.c": "int\nbar(void)\n{\n\treturn baz();\n}\n",
      "x/c.c": "int\nbaz(void)\n{\n\treturn foo();\n}\n"},
     ["call:x/a.c x/b.c x/c.c"], ["--known", "x/a.c,x/b.c"]),
    # A ring of three.
    ({"x/a.c": "void\na1(void)\n{\n\tb1();\n}\n",
      "x/b.c": "void\nb1(void)\n{\n\tc1();\n}\n",
      "x/c.c": "void\nc1(void)\n{\n\ta1();\n}\n"},
     ["call:x/a.c x/b.c x/c.c"], []),
    # Not circles: a static function of the same name, a name in a comment
    # or a string, a prototype in a header, a call through a hook.
    ({"x/a.c": "#include \"x/b.h\"\nint\nfoo(void)\n{\n\treturn bar();\n}\n",
      "x/b.h": "int foo(void);\nint bar(void);\n",
      "x/b.c": "static int\nfoo(void)\n{\n\treturn 0;\n}\n/* foo() */\nint (*hook)(void);\n"
               "int\nbar(void)\n{\n\tconst char *s = \"foo()\";\n\t(void)s;\n\treturn foo() + hook();\n}\n"},
     [], []),
    # A static inline function in a header calls back into the file that uses it.
    ({"x/a.c": "#include \"x/h.h\"\nint\nfoo(void)\n{\n\treturn inl();\n}\n",
      "x/h.h": "static inline int\ninl(void)\n{\n\treturn foo();\n}\n"},
     ["call:x/a.c x/h.h"], []),
    # Two headers including each other.
    ({"x/a.h": "#include \"x/b.h\"\n", "x/b.h": "#include \"x/a.h\"\n"},
     ["include:x/a.h x/b.h"], []),
]


def self_test():
    import io
    import tempfile
    failed = 0
    for files, want, opts in SELF_TESTS:
        with tempfile.TemporaryDirectory() as top:
            for path, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(top, path)), exist_ok=True)
                with open(os.path.join(top, path), "w", encoding="utf-8") as f:
                    f.write(text)
            out, saved = io.StringIO(), sys.stdout
            sys.stdout = out
            try:
                rc = main(["callgraph-check.py"] + opts + [top, "x"])
            finally:
                sys.stdout = saved
            got = sorted("%s:%s" % (line.split(" circle: ")[0], line.split(" circle: ")[1])
                         for line in out.getvalue().splitlines() if " circle: " in line)
            fails = [w for w in want if not w.startswith("known ")]
            if got != sorted(want) or rc != (1 if fails else 0):
                failed += 1
                print("self-test FAILED on %s: want %s, got %s (exit %d)" % (sorted(files), want, got, rc))
    print("callgraph-check self-test: %d of %d cases right" % (len(SELF_TESTS) - failed, len(SELF_TESTS)))
    return 1 if failed else 0


def main(argv):
    if len(argv) == 2 and argv[1] == "--self-test":
        return self_test()
    args, verbose, known = argv[1:], False, set()
    while args and args[0].startswith("-"):
        if args[0] == "-v":
            verbose, args = True, args[1:]
        elif args[0] == "--known" and len(args) > 1:
            known.add(tuple(sorted(args[1].split(","))))
            args = args[2:]
        else:
            sys.stderr.write(__doc__)
            return 2
    if len(args) < 2:
        sys.stderr.write(__doc__)
        return 2
    root, dirs = args[0], args[1:]
    files = {}
    for d in dirs:
        top = os.path.join(root, d)
        if not os.path.isdir(top):
            sys.stderr.write("callgraph-check: no folder %s\n" % top)
            return 2
        for dirpath, _, names in os.walk(top):
            for name in names:
                if name.endswith((".c", ".h")):
                    path = os.path.relpath(os.path.join(dirpath, name), root)
                    with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
                        files[path] = strip_text(f.read())

    # Calls.
    defined, static = {}, {}
    for path, text in files.items():
        names, own = definitions(text, path.endswith(".h"))
        for name in names:
            defined.setdefault(name, set()).add(node_of(path, files))
        static[path] = own
    nodes = {node_of(p, files) for p in files}
    why = {}
    defined.pop("main", None)  # each program's own, called by none
    for path, text in files.items():
        a = node_of(path, files)
        if path.endswith(".h"):
            text = header_uses(text)
        # A file's own static function of a name shadows another file's.
        for name in (set(IDENT.findall(text)) - static[path]) & defined.keys():
            for b in defined[name]:
                if b != a:
                    why.setdefault((a, b), set()).add(name)
    edges = {}
    for a, b in why:
        edges.setdefault(a, set()).add(b)
    calls = scc(nodes, edges)

    # Includes between headers.
    headers = {p for p in files if p.endswith(".h")}
    inc_why, inc_edges = {}, {}
    for h in headers:
        for inc in INCLUDE.findall(files_raw(root, h)):
            if inc in headers and inc != h:
                inc_why.setdefault((h, inc), set()).add("#include")
                inc_edges.setdefault(h, set()).add(inc)
    includes = scc(headers, inc_edges)

    if verbose:
        for (a, b), names in sorted(why.items()):
            print("%s -> %s: %s" % (a, b, ", ".join(sorted(names))))
    # Known call circles, left for later: printed, not failed; exactly
    # those files (a file joining one makes it a new circle).
    old = [c for c in calls if tuple(c) in known]
    calls = [c for c in calls if tuple(c) not in known]
    report("known call", old, why)
    for k in sorted(known - {tuple(c) for c in old}):
        print("callgraph-check: the known circle %s is gone: drop its --known" % ",".join(k))
    report("call", calls, why)
    report("include", includes, inc_why)
    if calls or includes:
        print("callgraph-check: %d call circle(s), %d include circle(s) in %s (docs/architecture.md, \"Circles\")"
              % (len(calls), len(includes), " ".join(dirs)))
        return 1
    print("callgraph-check: no %scircle in %s (%d files, %d edges between them)"
          % ("new " if old else "", " ".join(dirs), len(files), len(why)))
    return 0


def files_raw(root, path):
    """The header's text with comments blanked but strings kept (the include names are strings)."""
    with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
        src = f.read()
    return re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), src, flags=re.S)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
