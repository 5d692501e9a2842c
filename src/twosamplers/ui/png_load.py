""""Load settings from PNG": a PNG written by the CLI, a batch or the page -> its job dict and every region's mask.

The job layer reads the PNG (`Job.from_png`: the settings chunk, every region's embedded mask, and the regions
chunk of PNGs the page wrote before regions were part of the job). Loading reads values only: no file the PNG
names is opened here, whoever made it. Its start image is shown only when it is one of the page's own uploads
(`own_image`), and at Generate every file the job names must be the page's own (`confine.confine_settings`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..job import Job, JobError
from .confine import page_file, page_inputs
from .fields import MAX_REGIONS
from .values import UIError, label


def load_png_settings(path: str | os.PathLike) -> tuple[dict, list[torch.Tensor]]:
    """A PNG -> (its job dict as `Job.to_dict()` gives it: one region flat, several in `regions`; every region's
    mask, in region order). Raises UIError when unreadable, without embedded masks, or with more regions than
    the page has panels."""
    name = Path(path).name
    try:
        job = Job.from_png(path)  # values only: nothing the PNG names is read (see the module doc)
    except JobError as e:
        raise UIError(f"{name}: {label(e.field)}: {e.message}") from None
    except (ValueError, FileNotFoundError) as e:
        raise UIError(f"cannot load settings from {name}: {e}") from None
    masks = [r.mask_tensor for r in job.regions]
    if any(m is None for m in masks):
        raise UIError(f"{name} carries settings but no embedded mask")
    if len(masks) > MAX_REGIONS:
        raise UIError(f"{name} has {len(masks)} regions; the page has panels for {MAX_REGIONS} (render it with "
                      "`twosamplers generate --from`)")
    return job.to_dict(), masks


def own_image(path, page_dir: str | os.PathLike) -> np.ndarray | None:
    """A loaded PNG's start image (uint8 RGB), only when it is one of this page's own uploads (a PNG may name any
    path); None otherwise, or when it cannot be read."""
    from ..job.imageio import load_image

    if not isinstance(path, str) or not path:
        return None
    try:
        own = page_file(path, [page_inputs(page_dir)], "start image", "the page's own uploads")
        return np.clip(np.rint(load_image(own)[0].numpy() * 255.0), 0, 255).astype(np.uint8)
    except (OSError, ValueError):  # UIError is a ValueError
        return None


__all__ = ["load_png_settings", "own_image"]
