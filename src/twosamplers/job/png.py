"""A job as a PNG records it: the settings chunk (the job dict), every region's embedded mask, and the regions of
a PNG the web page wrote before regions were part of the job.

The writing side is `outputs.write_outputs` (`imageio.png_writer`: the job's dict in "twosamplers", region k's
mask in "twosamplers-mask" / "twosamplers-mask-k"). Older pages kept regions 2.. apart from the job, in a
"twosamplers-regions" chunk (each region's pass and its mask as an embedded PNG); such a PNG reads here as the
job with every region, so `twosamplers generate --from` and a batch's "from" line render all of them.
"""

from __future__ import annotations

import os

from .._checks import loads_json
from .fields import REGIONS
from .forms import regions_form
from .imageio import decode_mask_png, png_is_ours, read_png_job

PAGE_REGIONS_KEY = "twosamplers-regions"  # the page's regions 2.. before regions were part of the job (read only)
PAGE_SAME_MODEL = "same as base"  # the page's (and that chunk's) "model" of a region sampling with the job's model


def read_job(path: str | os.PathLike, with_origin: bool = False) -> tuple:
    """(the job dict the PNG stores, its embedded masks in region order: None where a region has none); with
    `with_origin`, also whether this user rendered it on this machine (`imageio.png_is_ours`: its origin tag
    covers every text chunk, the old page's regions chunk included)."""
    settings, masks, chunks = read_png_job(path)
    origin = (png_is_ours(chunks),) if with_origin else ()
    if PAGE_REGIONS_KEY not in chunks or REGIONS in settings:
        return (settings, masks, *origin)
    regions, region_masks = page_regions(chunks[PAGE_REGIONS_KEY], path)
    d = regions_form(settings)
    d[REGIONS] = [*d[REGIONS][:1], *regions]
    return (d, [masks[0] if masks else None, *region_masks], *origin)


def page_regions(text: str, path) -> tuple[list[dict], list]:
    """The old page chunk -> (region dicts of regions 2.., their masks)."""
    try:
        raw = loads_json(text, f"{path}: the '{PAGE_REGIONS_KEY}' chunk")
    except ValueError as e:
        raise ValueError(f"{e}; it is not readable") from None
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ValueError(f"{path}: the '{PAGE_REGIONS_KEY}' chunk is not a list of regions")
    regions, masks = [], []
    for j, r in enumerate(raw, start=2):
        if not isinstance(r.get("mask_png"), str):
            raise ValueError(f"{path}: region {j} of the '{PAGE_REGIONS_KEY}' chunk has no mask")
        try:
            masks.append(decode_mask_png(r["mask_png"]))
        except ValueError as e:
            raise ValueError(f"{path}: region {j}: {e}") from None
        region = {k: v for k, v in r.items() if k != "mask_png"}
        if region.get("model") in (None, "", PAGE_SAME_MODEL):
            region.pop("model", None)
        regions.append(region)
    return regions, masks


__all__ = ["PAGE_REGIONS_KEY", "page_regions", "read_job"]
