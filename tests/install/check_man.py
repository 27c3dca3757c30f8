#!/usr/bin/python3
"""check_man.py PROGRAM MARKDOWN [MANPAGE]: the man page's source
(docs/man/<program>.8.md) and the program agree on every command and flag.

The program is the truth: `PROGRAM -h` lists the commands, `PROGRAM <command>
-h` each command's flags (printed from the flag tables the parser uses).
The Markdown has one `## <command>` heading per command under `# COMMANDS`,
and one `**-flag**` definition per flag under it. A command or flag in one
and not the other fails, by name. MANPAGE (the pandoc output), when given
and present, must be a roff page for section 8 that names every flag.
Prints ok/FAIL per check; exits 1 on any failure.
"""
import os
import re
import subprocess
import sys

failures = []


def check(cond, what, detail=""):
    print(("ok: " if cond else "FAIL: ") + what + ("" if cond or not detail else f": {detail}"))
    if not cond:
        failures.append(what)


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def program_commands(prog):
    rc, out, err = run([prog, "-h"])
    check(rc == 0, f"{os.path.basename(prog)} -h exits 0", err)
    cmds = []
    in_list = False
    for line in out.splitlines():
        if line.startswith("Commands:"):
            in_list = True
            continue
        m = re.match(r"^  (\S+(?: \S+){0,2}?)\s{2,}\S", line) if in_list else None
        if m:
            cmds.append(m.group(1))
    return cmds


def program_flags(prog, cmd):
    rc, out, err = run([prog, *cmd.split(), "-h"])
    check(rc == 0, f"{os.path.basename(prog)} {cmd} -h exits 0", err)
    return {m.group(1) for m in re.finditer(r"^  -([A-Za-z0-9]+)\b", out, re.M)}


def page_commands(md):
    text = open(md, encoding="utf-8").read()
    m = re.search(r"^# COMMANDS\n(.*?)(?=^# )", text, re.M | re.S)
    if not m:
        return {}
    cmds = {}
    for block in re.split(r"^## ", m.group(1), flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        cmds[name.strip()] = {f for f in re.findall(r"^\*\*-([A-Za-z0-9]+)\*\*", body, re.M)}
    return cmds


def main():
    prog, md = sys.argv[1], sys.argv[2]
    man = sys.argv[3] if len(sys.argv) > 3 else None
    name = os.path.basename(prog)
    cmds = program_commands(prog)
    check(len(cmds) >= 3, f"{name} -h lists its commands", str(cmds))
    page = page_commands(md)
    check(sorted(cmds) == sorted(page), f"{name}: the page's commands are the program's",
          f"only in the program: {sorted(set(cmds) - set(page))}; only in the page: {sorted(set(page) - set(cmds))}")
    all_flags = set()
    for cmd in cmds:
        flags = program_flags(prog, cmd)
        all_flags |= flags
        documented = page.get(cmd, set())
        check(flags == documented, f"{name} {cmd}: the page's flags are the program's",
              f"only in the program: {sorted(flags - documented)}; only in the page: {sorted(documented - flags)}")
    if man is not None:
        if not os.path.exists(man):
            print(f"note: {man} was not built (no pandoc): the rendered page is not checked")
        else:
            roff = open(man, encoding="utf-8").read()
            check(re.search(rf'^\.TH "?{name.upper()}"? "?8"?', roff, re.M) is not None,
                  f"{os.path.basename(man)} is a roff page for section 8")
            missing = [f for f in sorted(all_flags) if f"\\-{f}" not in roff and f"-{f}" not in roff]
            check(not missing, f"{os.path.basename(man)} names every flag", str(missing))


if __name__ == "__main__":
    main()
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)
