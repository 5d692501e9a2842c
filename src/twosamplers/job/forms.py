"""A job dict's two forms and the shorthand: the one rule by which every front end's flat input (the CLI's flags,
a batch line, a `--from` PNG with overrides) becomes a job dict.

- One region is written flat (`mask`, `mask_prompt`, `mask_<pass key>`), several as a `regions` list of
  {"mask", "prompt", <pass keys>}; `region_dicts` reads either (flat keys set region 1's fields).
- A plain pass key (`seed`, `loras`, ...) sets every pass that gives none of its own; lists come first
  (`with_shared`).
- `merge` lays what the user gave over a stored job (a PNG's): given keys win, a given plain key replaces every
  pass's stored value, a given `regions` list replaces the stored regions, and `patches` set one region's fields.
"""

from __future__ import annotations

from .._checks import MAX_REGIONS
from .fields import REGION_KEYS, REGIONS, SHARED_KEYS, JobError, region_field


def region_dicts(d: dict) -> list[dict]:
    """Pops the regions out of a job dict (its `regions` list, then the flat `mask*` keys of region 1)."""
    raw = d.pop(REGIONS, None)
    regions = [] if raw is None else region_list(raw)
    flat = {k: d.pop(region_field(0, k, 1)) for k in REGION_KEYS if region_field(0, k, 1) in d}
    if regions:
        regions[0].update(flat)
    else:
        regions.append(flat)
    return regions


def region_list(raw) -> list[dict]:
    """A `regions` value, checked: a non-empty list of region objects -> copies without None values."""
    if not isinstance(raw, (list, tuple)) or not all(isinstance(r, dict) for r in raw):
        raise JobError(REGIONS, f"must be a list of region objects {{\"mask\", \"prompt\", ...}}, got {raw!r}")
    if not raw:
        raise JobError(REGIONS, "is empty: give at least one region (a mask and a prompt)")
    if len(raw) > MAX_REGIONS:
        raise JobError(REGIONS, f"{len(raw)} regions is out of range; accepted: 1 .. {MAX_REGIONS}")
    for i, r in enumerate(raw):
        unknown = sorted(set(r) - set(REGION_KEYS))
        if unknown:
            raise JobError(f"{REGIONS}[{i}].{unknown[0]}", f"unknown field (known: {', '.join(REGION_KEYS)})")
    return [{k: v for k, v in r.items() if v is not None} for r in raw]


def with_shared(shared, own):
    """A pass's value under the shorthand: its own, else the shared one; lists: the shared entries first."""
    if own is None:
        return shared
    if isinstance(shared, list) and isinstance(own, (list, tuple)):
        return [*shared, *own]
    return own


def regions_form(d: dict) -> dict:
    """A job dict (flat or not) with its regions as a `regions` list (the form `merge` works on)."""
    d = {k: v for k, v in d.items() if v is not None}
    regions = region_dicts(d)
    return {**d, REGIONS: regions}


def merge(stored: dict, given: dict, patches: dict[int, dict] | None = None, stored_masks=None
          ) -> tuple[dict, list]:
    """`given` (a job dict, shorthand allowed: what the user typed) over `stored` (a job, e.g. a PNG's) -> (the
    merged dict, each region's stored mask tensor where it still applies, else None).

    Given top-level and `base_*` keys replace stored ones; a given `regions` list replaces the stored regions; flat
    `mask*` keys set region 1's fields; `patches` {region index: {key: value}} set one region's fields (the
    CLI's --region-seed N ...). A given plain pass key (`seed`) replaces every pass's stored value, so that the
    shorthand applies to them all, as when nothing is stored. A region whose `mask` is given (or replaced with
    its list) no longer uses the stored mask tensor."""
    d = regions_form(stored)
    given = {k: v for k, v in given.items() if v is not None}
    regions = [dict(r) for r in d.pop(REGIONS)]
    masks = (list(stored_masks or []) + [None] * len(regions))[:len(regions)]
    for k in SHARED_KEYS:
        if k in given:  # the stored passes' own values give way to the given plain key
            d.pop(f"base_{k}", None)
            for r in regions:
                r.pop(k, None)
    if REGIONS in given:
        regions = region_list(given.pop(REGIONS))
        masks = [None] * len(regions)
    flat = {k: given.pop(region_field(0, k, 1)) for k in REGION_KEYS if region_field(0, k, 1) in given}
    for i, changes in [*([(0, flat)] if flat else []), *sorted((patches or {}).items())]:
        if i == 0 and not regions:
            regions, masks = [{}], [None]
        if not 0 <= i < len(regions):
            raise JobError(f"{REGIONS}[{i}]", f"there is no region {i + 1}: the job has {len(regions)}")
        regions[i].update(changes)
        if "mask" in changes:
            masks[i] = None
    d.update(given)
    d[REGIONS] = regions
    return d, masks


__all__ = ["merge", "region_dicts", "region_list", "regions_form", "with_shared"]
