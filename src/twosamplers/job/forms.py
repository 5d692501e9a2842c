"""A job dict's two forms and the shorthand: the one rule by which every front end's flat input (the CLI's flags,
a batch line, a `--from` PNG with overrides) becomes a job dict.

- One region is written flat (`mask`, `mask_prompt`, `mask_<pass key>`), several as a `regions` list of
  {"mask", "prompt", <pass keys>}; `region_dicts` reads either (flat keys set region 1's fields).
- A plain pass key (`seed`, `loras`, ...) sets every pass that gives none of its own; lists come first
  (`with_shared`).
- `merge` lays what the user gave over a stored job (a PNG's): given keys win, a given plain key replaces every
  pass's stored value, a given `regions` list replaces the stored regions, and `patches` set one region's fields.
- `map_files` walks every file a job dict names (either form, every pass and region), for the front ends that
  make them absolute (a batch line, a --regions file) or keep them inside their folders (a batch line, the page).
"""

from __future__ import annotations

from .._checks import MAX_REGIONS
from .fields import REGION_KEYS, REGIONS, SHARED_KEYS, JobError, controlnet_files, region_field

# a job dict's file fields by kind (a region has "mask", "model" and "controlnets" too)
FILE_KEYS = {"mask": "mask", "image": "image", "model": "model", "base_model": "model", "mask_model": "model",
             "lora_dir": "folder", "embeddings": "folder"}
CONTROLNET_KEYS = ("controlnets", "base_controlnets", "mask_controlnets")


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


def map_files(d: dict, fn, prefix: str = "") -> dict:
    """A copy of job dict `d` with every file it names passed through fn(kind, key, value): kinds "model",
    "image", "mask", "folder" (lora_dir, embeddings), "controlnet" and "hint" (a ControlNet entry's FILE and
    IMAGE), keys as the dict places them ("regions[1].controlnets[0].image"). LoRA entries are names in lora_dir
    (or the user's own paths): not walked. Values that are None are left out of the walk, bad types go to `fn`."""
    out = dict(d)
    for key, kind in FILE_KEYS.items():
        if out.get(key) is not None:
            out[key] = fn(kind, prefix + key, out[key])
    for key in CONTROLNET_KEYS:
        if out.get(key):
            entries = out[key] if isinstance(out[key], list) else [out[key]]
            mapped = [controlnet_files(c, fn, f"{prefix}{key}[{i}]") for i, c in enumerate(entries)]
            out[key] = mapped if isinstance(out[key], list) else mapped[0]
    if isinstance(out.get(REGIONS), (list, tuple)):
        out[REGIONS] = [map_files(r, fn, f"{prefix}{REGIONS}[{i}].") if isinstance(r, dict) else r
                        for i, r in enumerate(out[REGIONS])]
    return out


__all__ = ["map_files", "merge", "region_dicts", "region_list", "regions_form", "with_shared"]
