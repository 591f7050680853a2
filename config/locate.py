"""Find the line of a TOML file that a validation error points at.

tomllib keeps no positions, so we walk the text: `[[models]]` number 3 and then its `pricing`
table and `prompt` key. Good enough for hand-written config files, which is what operators edit.
"""

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")


def line_of(text: str, loc: tuple[int | str, ...]) -> int:
    """1-based line for a pydantic error location such as ("models", 2, "pricing", "prompt")."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    best = 1
    prefix: list[str] = []
    i = 0
    parts = list(loc)
    while i < len(parts):
        part = parts[i]
        if isinstance(part, int):
            i += 1
            continue
        name = str(part)
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        table = ".".join([*prefix, name])
        if isinstance(nxt, int):
            found = _nth_array_header(lines, start, end, table, nxt)
            if found is None:
                found = _key_line(lines, start, end, name)
                return found + 1 if found is not None else best
            start = found
            end = _block_end(lines, found + 1, end, table)
            best = found + 1
            prefix = [table]
            i += 2
            continue
        header = _table_header(lines, start, end, table)
        if header is not None:
            start = header
            best = header + 1
            prefix = [table]
            i += 1
            continue
        key = _key_line(lines, start, end, name)
        if key is not None:
            return key + 1
        return best
    return best


def _nth_array_header(lines: list[str], start: int, end: int, table: str, n: int) -> int | None:
    seen = -1
    for idx in range(start, end):
        m = _HEADER.match(lines[idx])
        if m and m.group(1) == "[[" and m.group(2) == table:
            seen += 1
            if seen == n:
                return idx
    return None


def _block_end(lines: list[str], start: int, end: int, table: str) -> int:
    for idx in range(start, end):
        m = _HEADER.match(lines[idx])
        if m and not m.group(2).startswith(table + "."):
            return idx
    return end


def _table_header(lines: list[str], start: int, end: int, table: str) -> int | None:
    for idx in range(start, end):
        m = _HEADER.match(lines[idx])
        if m and m.group(1) == "[" and m.group(2) == table:
            return idx
    return None


def _key_line(lines: list[str], start: int, end: int, key: str) -> int | None:
    for idx in range(start, end):
        stripped = lines[idx].split("#", 1)[0]
        if key in stripped and "=" in stripped:
            m = _KEY.match(stripped)
            if m and m.group(1).strip('"') == key:
                return idx
            if re.search(rf"[{{,]\s*{re.escape(key)}\s*=", stripped):
                return idx
    return None
