"""Jobs files: JSON Lines, one job (or one grid of jobs) per line, read whole and expanded before any work.

A line is a JSON object with the fields of `twosamplers generate`, or a workflow file and its `set` overrides
(`batch.workflow_line`). A field whose value is a list,
`{"grid": [v1, v2, ...]}`, or `{"range": [start, stop]}` / `{"range": [start, stop, step]}` (integers, stop
excluded, as Python's range) expands the line into one job per value; several such fields give their
cartesian product, in the order the fields appear on the line; each entry of a workflow line's `set` object,
and each field of a job's region objects (`"regions": [{"mask": ..., "seed": {"range": [0, 4]}}, ...]`), is
such a field too. Fields whose value is itself a list (LoRAs, ControlNets, regions) take a plain list as their
value; a grid over them is spelled `{"grid": [[...], [...]]}`.
Blank lines and lines starting with `#` are skipped. Errors are collected with their line numbers rather
than raised one at a time, so a user fixes a whole file in one go.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_JOBS_PER_LINE = 100_000  # a typo such as range [0, 1e9] should be an error, not an hour of expansion


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the jobs file
    fields: dict  # one job's fields (grids already expanded)


MAX_JOBS_FILE_BYTES = 256 * 1024 * 1024


def read_jobs_text(source: str) -> tuple[str, Path]:
    """The text of a jobs file (`-` reads stdin) and the folder relative paths refer to (and that its lines may
    name files in)."""
    from .._paths import read_regular

    if source == "-":
        return sys.stdin.read(), Path.cwd()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"jobs file not found: {source}")
    data = read_regular(path, "jobs file", MAX_JOBS_FILE_BYTES)
    if len(data) > MAX_JOBS_FILE_BYTES:
        raise ValueError(f"jobs file {source} is larger than {MAX_JOBS_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig"), path.resolve().parent
    except UnicodeDecodeError as e:
        raise ValueError(f"jobs file {source} is not UTF-8 text: {e}") from None


def _axis(key: str, value, list_valued: bool) -> list | None:
    """The values a grid field takes, or None when the field is a plain value."""
    if isinstance(value, list) and not list_valued:
        if not value:
            raise ValueError(f"{key}: an empty list gives no jobs")
        return value
    if isinstance(value, dict) and set(value) == {"grid"}:
        if not isinstance(value["grid"], list) or not value["grid"]:
            raise ValueError(f"{key}: grid must be a non-empty list of values, got {value['grid']!r}")
        return value["grid"]
    if isinstance(value, dict) and not list_valued:
        if set(value) != {"range"}:
            raise ValueError(f"{key}: an object value must be {{\"range\": [start, stop(, step)]}} or "
                             f"{{\"grid\": [values]}}, got {value}")
        r = value["range"]
        if (not isinstance(r, list) or len(r) not in (2, 3)
                or any(isinstance(v, bool) or not isinstance(v, int) for v in r)):
            raise ValueError(f"{key}: range must be 2 or 3 integers [start, stop(, step)], got {r!r}")
        if len(r) == 3 and r[2] == 0:
            raise ValueError(f"{key}: range step must not be 0")
        start, stop, step = (*r, 1) if len(r) == 2 else r
        count = max(0, (stop - start + step - (1 if step > 0 else -1)) // step)  # no len(): it overflows at 2**63
        if count == 0:
            raise ValueError(f"{key}: range {r} is empty")
        if count > MAX_JOBS_PER_LINE:
            raise ValueError(f"{key}: range {r} has {count} values; at most {MAX_JOBS_PER_LINE} per line")
        return list(range(start, stop, step))
    return None


def expand(fields: dict, list_fields: frozenset[str] = frozenset(), nested: frozenset[str] = frozenset(),
           nested_lists: frozenset[str] = frozenset()) -> list[dict]:
    """One line's fields -> the jobs of its grid (a line without grid fields is one job). `list_fields`: the
    fields whose value is a list (only `{"grid": ...}` expands them; inside nested objects too). `nested`:
    fields whose value is an object of settings (a workflow line's `set`); each of its entries may be a grid axis
    too. `nested_lists`: fields whose value is a list of such objects (a job's `regions`)."""
    axes: dict = {}
    for key, value in fields.items():
        if key in nested and isinstance(value, dict):
            for inner, v in value.items():
                values = _axis(f"{key}.{inner}", v, False)
                if values is not None:
                    axes[(key, inner)] = values
            continue
        if key in nested_lists and isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for j, obj in enumerate(value):
                for inner, v in obj.items():
                    values = _axis(f"{key}[{j}].{inner}", v, inner in list_fields)
                    if values is not None:
                        axes[(key, j, inner)] = values
            continue
        values = _axis(key, value, key in list_fields)
        if values is not None:
            axes[key] = values
    total = 1
    for values in axes.values():
        total *= len(values)
    if total > MAX_JOBS_PER_LINE:
        raise ValueError(f"the grid has {total} jobs; at most {MAX_JOBS_PER_LINE} per line")
    jobs = []
    for combo in itertools.product(*axes.values()):
        job = {k: _copy(v) if k in nested or k in nested_lists else v for k, v in fields.items()}
        for axis, value in zip(axes, combo, strict=True):
            if isinstance(axis, tuple) and len(axis) == 3:
                job[axis[0]][axis[1]][axis[2]] = value
            elif isinstance(axis, tuple):
                job[axis[0]][axis[1]] = value
            else:
                job[axis] = value
        jobs.append(job)
    return jobs


def _copy(v):
    """A nested value copied one level down (each job of a grid gets its own objects to fill in)."""
    if isinstance(v, dict):
        return dict(v)
    if isinstance(v, list):
        return [dict(x) if isinstance(x, dict) else x for x in v]
    return v


def parse_lines(text: str, list_fields: frozenset[str] = frozenset(), nested: frozenset[str] = frozenset(),
                nested_lists: frozenset[str] = frozenset()) -> tuple[list[Line], list[str]]:
    """Every job of a jobs file, and the errors as "line N: reason" (both in file order)."""
    import json

    from .._checks import check_depth

    lines, errors = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        try:
            fields = check_depth(json.loads(raw), "the line")
        except json.JSONDecodeError as e:
            errors.append(f"line {number}: not valid JSON: {e.msg} (column {e.colno})")
            continue
        except RecursionError:
            errors.append(f"line {number}: the line is nested too deeply to be read")
            continue
        except ValueError as e:
            errors.append(f"line {number}: {e}")
            continue
        if not isinstance(fields, dict):
            errors.append(f"line {number}: a job must be a JSON object, got {type(fields).__name__}")
            continue
        try:
            lines.extend(Line(number, job) for job in expand(fields, list_fields, nested, nested_lists))
        except ValueError as e:
            errors.append(f"line {number}: {e}")
    return lines, errors
