"""Impact Pack's wildcard prompt syntax, seeded: the same text and seed give the same prompt every time, and
the choices Impact Pack makes for that seed (the same draws from numpy's default_rng(seed), in the same order).

Syntax (Impact's documented behaviour):
- a line starting with `#` is a comment; the line after it joins the line before it (one space between);
- `{a|b|c}` picks one option; `2::a` weights an option (default 1); `{2$$a|b|c}` picks 2 distinct options
  joined by a space, `{1-3$$...}` between 1 and 3, `{-3$$...}` up to 3, `{2$$, $$a|b|c}` joins with ", ";
  `{2$$__colors__}` picks among a wildcard's lines; options may nest, innermost first;
- `__name__` is a random line of `wildcards/name.txt` (or the list `name` of a YAML file, nested keys joined by
  "/"); names are case-insensitive, "\\" is "/", spaces are "-"; `*` matches any run of characters; a name
  without "/" also matches it in any subfolder; `3#__name__` stands for `__name__|__name__|__name__`;
- expansion repeats (at most 100 rounds) until nothing changes, so wildcards may contain options and
  wildcards. An unknown wildcard stays as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

WILDCARD = re.compile(r"__([\w.\-+/*\\]+?)__")
QUANTIFIED = re.compile(r"(?P<count>\d+)#__(?P<name>[\w.\-+/*\\]+?)__", re.IGNORECASE)
OPTIONS = re.compile(r"{([^{}]*?)}")
NUMBER = re.compile(r"^-?(\d*\.?\d+|\d+\.?\d*)$")
MAX_ROUNDS = 99
MAX_FILE_BYTES = 16 * 1024 * 1024


def normalize(name: str) -> str:
    return name.replace("\\", "/").replace(" ", "-").lower()


def _add_yaml(table: dict, key: str, value) -> None:
    if isinstance(value, list):
        table[normalize(key)] = [str(v) for v in value]
    elif isinstance(value, dict):
        for k, v in value.items():
            _add_yaml(table, f"{key}/{k}", v)
    elif isinstance(value, str):
        table[normalize(key)] = [value]


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"wildcard file {path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    return path.read_bytes().decode("latin-1")


def load_wildcards(folders: list[Path]) -> dict[str, list[str]]:
    """name -> lines, from the .txt and .yaml files under `folders` (first folder wins for a name)."""
    table: dict[str, list[str]] = {}
    for root in folders:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file():
                continue
            found: dict[str, list[str]] = {}
            if path.suffix == ".txt":
                key = normalize(path.relative_to(root).with_suffix("").as_posix())
                found[key] = [x for x in _read_text(path).splitlines() if not x.strip().startswith("#")]
            elif path.suffix == ".yaml":
                import yaml

                try:
                    data = yaml.safe_load(_read_text(path))
                except yaml.YAMLError as e:
                    raise ValueError(f"wildcard file {path} is not valid YAML: {e}") from None
                for k, v in (data or {}).items() if isinstance(data, dict) else ():
                    _add_yaml(found, str(k), v)
            for k, v in found.items():
                table.setdefault(k, v)
    return table


def strip_comments(text: str) -> str:
    out: list[str] = []
    joined = False
    for line in text.split("\n"):
        if line.lstrip().startswith("#"):
            joined = True
            continue
        if out and joined:
            out[-1] += " " + line
        else:
            out.append(line)
        joined = False
    return "\n".join(out)


class Expander:
    """One expansion: a wildcard table and numpy's default_rng(seed)."""

    def __init__(self, table: dict[str, list[str]], seed: int | None) -> None:
        self.table = table
        self.rng = np.random.default_rng(seed)

    def lines_of(self, name: str) -> list[str] | None:
        key = normalize(name.lower())
        if key in self.table:
            return self.table[key]
        if "*" in key:
            pattern = key.replace("*", ".*").replace("+", "\\+")
            hits = [v for k, vs in self.table.items() if re.match(pattern, k) or re.match(pattern, k + "/")
                    for v in vs]
            return hits or None
        if "/" not in key:
            return self.lines_of("*/" + key)
        return None

    def _count(self, head: str) -> tuple[tuple[int, int] | None, str]:
        m = re.match(r"(\d+)(-(\d+))?", head) or re.match(r"-(\d+)", head)
        if m is None:
            return None, head
        if m.re.pattern.startswith("-"):
            lo, hi = "1", m.group(1).strip()
        else:
            lo, hi = m.group(1).strip(), m.group(3).strip() if m.group(3) is not None else None
        if hi is not None and NUMBER.match(lo) and NUMBER.match(hi):
            return (int(lo), int(hi)), head
        if NUMBER.match(lo):
            return (int(lo), int(lo)), head
        return None, head

    def choose(self, body: str) -> str:
        """One {...} group -> its replacement."""
        options = body.split("|")
        parts = options[0].split("$$")
        span, sep = None, " "
        if len(parts) > 1:
            span, _ = self._count(options[0])
            if span is not None and len(parts) == 2:
                if len(options) == 1 and WILDCARD.search(parts[1]):
                    options = [line for name in WILDCARD.findall(parts[1]) for line in (self.lines_of(name) or [])]
                else:
                    options[0] = parts[1]
            elif span is not None and len(parts) == 3:
                sep, options[0] = parts[1], parts[2]
        weights = []
        for opt in options:
            w = opt.split("::", 1)
            weights.append(float(w[0].strip()) if len(w) == 2 and NUMBER.match(w[0].strip()) else 1)
        total = sum(weights)
        if not options or total <= 0:
            return ""
        count = 1 if span is None else self.rng.integers(low=span[0], high=span[1] + 1, size=1)
        if count > len(options):
            self.rng.shuffle(options)
            picked = options
        else:
            picked = self.rng.choice(options, p=[w / total for w in weights], size=count, replace=False)
        return sep.join(re.sub(r"^\s*[0-9.]+::", "", str(x), count=1) for x in picked)

    def options_pass(self, text: str) -> tuple[str, bool]:
        found = False

        def one(m):
            nonlocal found
            found = True
            return self.choose(m.group(1))

        return OPTIONS.sub(one, text), found

    def wildcard_pass(self, text: str) -> tuple[str, bool]:
        found = False
        for name in WILDCARD.findall(text):
            lines = self.lines_of(name)
            if lines:
                text = text.replace(f"__{name}__", str(self.rng.choice(lines)), 1)
                found = True
        return text, found

    def expand(self, text: str) -> str:
        text = strip_comments(text)
        for _ in range(MAX_ROUNDS):
            for m in list(QUANTIFIED.finditer(text)):
                name = m.group("name").lower()
                repeated = "__|__".join([name] * int(m.group("count")))
                text = re.sub(rf"(\d+)#__({re.escape(name)})__", f"__{repeated}__", text, flags=re.IGNORECASE)
            changed = True
            any_option = False
            while changed:
                text, changed = self.options_pass(text)
                any_option = any_option or changed
            text, any_wildcard = self.wildcard_pass(text)
            if not any_option and not any_wildcard:
                break
        return text


def expand(text: str, seed: int | None, table: dict[str, list[str]]) -> str:
    """The prompt `text` with its options and wildcards filled in for `seed` (module doc)."""
    if not isinstance(text, str):
        raise TypeError(f"wildcard text must be a string, got {type(text).__name__}")
    return Expander(table, seed).expand(text)


LORA_TAG = re.compile(r"<lora:([^>]+)>")


def lora_tags(text: str) -> list[tuple[str, float, float]]:
    """`<lora:name[:model_weight[:clip_weight]]>` tags -> [(name, model, clip)], each name once; the clip
    weight defaults to the model weight, which defaults to 1. Block-weight (LBW=) parts are ignored."""
    out, seen = [], set()
    for raw in LORA_TAG.findall(text):
        item = re.sub(r"LBW=[A-Za-z][A-Za-z0-9_-]*:", "LBW=", raw.strip(":")).split(":")
        name, nums = item[0], [float(x) for x in item[1:] if NUMBER.match(x)]
        a = nums[0] if nums else 1.0
        b = nums[1] if len(nums) > 1 else a
        if name and name not in seen:
            seen.add(name)
            out.append((name, a, b))
    return out


def without_lora_tags(text: str) -> str:
    return LORA_TAG.sub("", text)


__all__ = ["Expander", "expand", "load_wildcards", "lora_tags", "normalize", "strip_comments",
           "without_lora_tags"]
