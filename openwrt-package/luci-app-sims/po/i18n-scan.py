#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Writes luci-app-sims's gettext template, po/templates/sims.pot.

Scans the app's views (htdocs/**/*.js) for the strings LuCI translates:

    _('text')  _("text")  _('text', 'context')
    N_(n, 'singular', 'plural')  N_(n, 'singular', 'plural', 'context')

(literals may be joined with +), and the menu titles of
root/usr/share/luci/menu.d/*.json. Entries are sorted by msgid, then
context; each lists every place it occurs as `#: file:line`, paths from
the directory holding the app (luci-app-sims/htdocs/...). The output has
no dates, so it only changes when the strings do.

    po/i18n-scan.py            rewrite po/templates/sims.pot
    po/i18n-scan.py --check    exit 1 if it is out of date (CI)
    po/i18n-scan.py --stdout   print it

Python 3 standard library only.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent
POT = APP / "po" / "templates" / "sims.pot"
WIDTH = 79

HEADER = 'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8"\n'

# Keywords after which a '/' starts a regular expression, not a division.
REGEX_AFTER_WORDS = {
    "return", "typeof", "instanceof", "in", "of", "new", "delete", "void",
    "throw", "case", "do", "else", "yield", "await",
}


class ScanError(Exception):
    pass


def unescape_js(body, quote, line):
    """The value of a JS string literal's body (between its quotes)."""
    out = []
    i = 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
              "v": "\v", "0": "\0"}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise ScanError(f"line {line}: string ends in a backslash")
        e = body[i]
        if e in simple and not (e == "0" and i + 1 < len(body) and body[i + 1].isdigit()):
            out.append(simple[e])
            i += 1
        elif e == "x":
            out.append(chr(int(body[i + 1:i + 3], 16)))
            i += 3
        elif e == "u":
            if body[i + 1:i + 2] == "{":
                end = body.index("}", i)
                out.append(chr(int(body[i + 2:end], 16)))
                i = end + 1
            else:
                out.append(chr(int(body[i + 1:i + 5], 16)))
                i += 5
        elif e == "\n":
            i += 1  # line continuation
        elif e == "\r":
            i += 2 if body[i + 1:i + 2] == "\n" else 1
        else:
            out.append(e)
            i += 1
    return "".join(out)


def tokenize(src):
    """JS tokens: (kind, value, line), kind one of str, name, num, punct.

    Comments, template literals and regular expressions are skipped; the
    scanner only needs to find calls of _ and N_ and their literal
    arguments, and never to mistake text in a comment or a regex for one.
    """
    toks = []
    i, line, n = 0, 1, len(src)
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                raise ScanError(f"line {line}: unterminated comment")
            line += src.count("\n", i, j)
            i = j + 2
        elif c in "'\"":
            j = i + 1
            while j < n and src[j] != c:
                if src[j] == "\\":
                    j += 1
                elif src[j] == "\n":
                    raise ScanError(f"line {line}: unterminated string")
                j += 1
            if j >= n:
                raise ScanError(f"line {line}: unterminated string")
            body = src[i + 1:j]
            toks.append(("str", unescape_js(body, c, line), line))
            line += body.count("\n")
            i = j + 1
        elif c == "`":
            # A template literal: skipped whole (nested ${...} included).
            j, depth = i + 1, 0
            while j < n:
                if src[j] == "\\":
                    j += 2
                    continue
                if depth == 0 and src[j] == "`":
                    break
                if src.startswith("${", j):
                    depth += 1
                    j += 2
                    continue
                if depth and src[j] == "}":
                    depth -= 1
                j += 1
            line += src.count("\n", i, j)
            toks.append(("tpl", None, line))
            i = j + 1
        elif c == "/" and regex_allowed(toks):
            j, in_class = i + 1, False
            while j < n:
                if src[j] == "\\":
                    j += 2
                    continue
                if src[j] == "\n":
                    raise ScanError(f"line {line}: unterminated regular expression")
                if src[j] == "[":
                    in_class = True
                elif src[j] == "]":
                    in_class = False
                elif src[j] == "/" and not in_class:
                    break
                j += 1
            j += 1
            while j < n and (src[j].isalnum() or src[j] == "_"):
                j += 1
            toks.append(("re", None, line))
            i = j
        elif c.isalpha() or c in "_$":
            m = re.compile(r"[A-Za-z0-9_$]+").match(src, i)
            toks.append(("name", m.group(0), line))
            i = m.end()
        elif c.isdigit():
            m = re.compile(r"[0-9A-Za-z_.]+").match(src, i)
            toks.append(("num", m.group(0), line))
            i = m.end()
        else:
            toks.append(("punct", c, line))
            i += 1
    return toks


def regex_allowed(toks):
    if not toks:
        return True
    kind, val, _ = toks[-1]
    if kind in ("str", "num", "tpl", "re"):
        return False
    if kind == "name":
        return val in REGEX_AFTER_WORDS
    return val not in (")", "]", "}")


def literal_args(toks, i):
    """From the token after '(' at i: the call's arguments, each a string
    (literals joined with +) or None (anything else), and the index after
    the closing ')'."""
    args, cur, depth, parts_ok = [], [], 0, True
    while i < len(toks):
        kind, val, _ = toks[i]
        if kind == "punct" and val in "([{":
            depth += 1
            parts_ok = False
        elif kind == "punct" and val in ")]}":
            if depth == 0:
                args.append(joined(cur) if parts_ok else None)
                return args, i + 1
            depth -= 1
        elif kind == "punct" and val == "," and depth == 0:
            args.append(joined(cur) if parts_ok else None)
            cur, parts_ok = [], True
            i += 1
            continue
        if depth == 0 and parts_ok:
            cur.append(toks[i])
        i += 1
    raise ScanError("unterminated call")


def joined(toks):
    """'a' + 'b' -> 'ab'; None unless the tokens are literals and +."""
    if not toks or len(toks) % 2 == 0:
        return None
    out = []
    for k, t in enumerate(toks):
        if k % 2 == 0:
            if t[0] != "str":
                return None
            out.append(t[1])
        elif t != ("punct", "+", t[2]):
            return None
    return "".join(out)


def scan_js(path, rel, entries, warnings):
    toks = tokenize(path.read_text(encoding="utf-8"))
    for i, (kind, val, line) in enumerate(toks):
        if kind != "name" or val not in ("_", "N_"):
            continue
        if i + 1 >= len(toks) or toks[i + 1][:2] != ("punct", "("):
            continue
        if i > 0 and toks[i - 1][:2] == ("punct", "."):
            continue  # obj._(...): not the translation function
        if i > 0 and toks[i - 1][0] == "name" and toks[i - 1][1] in ("function", "const", "let", "var"):
            continue
        args, _ = literal_args(toks, i + 2)
        where = f"{rel}:{line}"
        if val == "_":
            msgid = args[0] if args else None
            ctxt = args[1] if len(args) > 1 else None
            if msgid is None or (len(args) > 1 and ctxt is None):
                warnings.append(f"{where}: _() with a non-literal argument, skipped")
                continue
            add(entries, (msgid, ctxt, None), where)
        else:
            if len(args) < 3 or args[1] is None or args[2] is None or (len(args) > 3 and args[3] is None):
                warnings.append(f"{where}: N_() with non-literal arguments, skipped")
                continue
            add(entries, (args[1], args[3] if len(args) > 3 else None, args[2]), where)


def scan_menu(path, rel, entries):
    text = path.read_text(encoding="utf-8")
    menu = json.loads(text)
    lines = text.split("\n")
    for node in menu.values():
        title = node.get("title") if isinstance(node, dict) else None
        if not isinstance(title, str) or title == "":
            continue
        pat = re.compile(r'"title"\s*:\s*' + re.escape(json.dumps(title, ensure_ascii=False)))
        found = [k + 1 for k, l in enumerate(lines) if pat.search(l)]
        for ln in found or [1]:
            add(entries, (title, None, None), f"{rel}:{ln}")


def add(entries, key, where):
    if key[0] == "":
        return
    places = entries.setdefault(key, [])
    if where not in places:
        places.append(where)


def po_escape(s):
    return (s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
             .replace("\t", "\\t").replace("\r", "\\r"))


def po_field(keyword, s):
    """`keyword "s"`, or xgettext's wrapped form: `keyword ""` then lines
    of at most WIDTH columns, broken after spaces and after \\n."""
    esc = po_escape(s)
    one = f'{keyword} "{esc}"'
    if len(one) <= WIDTH and "\\n" not in esc[:-2]:
        return one + "\n"
    # Pieces that end after a space or an escaped newline.
    pieces = re.findall(r"(?:[^ \\]|\\.)*?(?: |\\n)|(?:[^ \\]|\\.)+$", esc)
    out, cur = [f'{keyword} ""'], ""
    for p in pieces:
        if cur and (len(cur) + len(p) + 2 > WIDTH or cur.endswith("\\n")):
            out.append(f'"{cur}"')
            cur = ""
        cur += p
    if cur:
        out.append(f'"{cur}"')
    return "\n".join(out) + "\n"


def line_key(where):
    f, _, ln = where.rpartition(":")
    return (f, int(ln))


def render(entries):
    out = [HEADER]
    for (msgid, ctxt, plural) in sorted(entries, key=lambda k: (k[0], k[1] or "", k[2] or "")):
        places = sorted(entries[(msgid, ctxt, plural)], key=line_key)
        block = "".join(f"#: {w}\n" for w in places)
        if ctxt is not None:
            block += po_field("msgctxt", ctxt)
        block += po_field("msgid", msgid)
        if plural is not None:
            block += po_field("msgid_plural", plural)
            block += 'msgstr[0] ""\nmsgstr[1] ""\n'
        else:
            block += 'msgstr ""\n'
        out.append(block)
    return "\n".join(out)


def generate():
    entries, warnings = {}, []
    base = APP.parent
    for path in sorted((APP / "htdocs").rglob("*.js")):
        rel = path.relative_to(base).as_posix()
        try:
            scan_js(path, rel, entries, warnings)
        except ScanError as e:
            raise SystemExit(f"{rel}: {e}")
    for path in sorted((APP / "root" / "usr" / "share" / "luci" / "menu.d").glob("*.json")):
        scan_menu(path, path.relative_to(base).as_posix(), entries)
    for w in warnings:
        print(f"i18n-scan: warning: {w}", file=sys.stderr)
    return render(entries), len(entries)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the .pot is out of date")
    ap.add_argument("--stdout", action="store_true", help="print the .pot instead of writing it")
    a = ap.parse_args()
    text, count = generate()
    if a.stdout:
        sys.stdout.write(text)
        return 0
    rel = POT.relative_to(APP.parent).as_posix()
    if a.check:
        old = POT.read_text(encoding="utf-8") if POT.exists() else ""
        if old == text:
            print(f"{rel}: up to date, {count} strings")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(True), text.splitlines(True), f"{rel} (committed)", f"{rel} (from the sources)"))
        print(f"{rel} is out of date: run openwrt-package/luci-app-sims/po/i18n-scan.py", file=sys.stderr)
        return 1
    POT.parent.mkdir(parents=True, exist_ok=True)
    POT.write_text(text, encoding="utf-8")
    print(f"{rel}: {count} strings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
