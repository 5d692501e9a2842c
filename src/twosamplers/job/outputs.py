"""A job's outputs: checked before any work (`check_outputs`), written together and atomically
(`write_outputs`: every file to a temporary file first, then every rename), so a failure or Ctrl-C while
writing leaves each target as it was."""

from __future__ import annotations

import json
from pathlib import Path

from .._files import atomic_write_all
from .run import JobResult, Outputs, metadata
from .spec import Job, JobError

_FLAG = {"image": "output", "preview": "preview", "latent": "save_latent"}


def check_outputs(outputs: Outputs, job: Job | None = None) -> None:
    """Every output path can be written: not a folder, its folder exists. Raises JobError naming the output."""
    for key, path in outputs.items():
        p = Path(path)
        if p.exists() and p.is_dir():
            raise JobError(_FLAG[key], f"{path} is a folder")
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.is_dir():
            raise JobError(_FLAG[key], f"the folder of {path} does not exist")


def write_outputs(result: JobResult, outputs: Outputs) -> dict[str, str]:
    """Write the image (with the job in its metadata and the mask embedded), the preview strip
    (mask | base | result) and the latent, all or none. Returns {output: path}."""
    from ..imageio import png_writer, resize_mask, side_by_side, to_uint8
    from ..latent import latent_writer

    stored = metadata(result.job)
    writers = []
    if outputs.image is not None:
        writers.append((outputs.image, png_writer(result.image[:1], settings=stored, mask=result.mask)))
    if outputs.latent is not None:
        meta = {"twosamplers": json.dumps(stored, sort_keys=True)}
        writers.append((outputs.latent, latent_writer({"samples": result.samples}, metadata=meta)))
    if outputs.preview is not None:
        h, w = result.image.shape[1:3]
        tiles = [to_uint8(resize_mask(result.mask, h, w)[..., None].expand(h, w, 3).clamp(0, 1))]
        if result.base_preview is not None:
            tiles.append(to_uint8(result.base_preview[0]))
        tiles.append(to_uint8(result.image[0]))
        label = "mask | base | result" if len(tiles) == 3 else "mask | result"
        writers.append((outputs.preview, png_writer(side_by_side(tiles), text={"twosamplers-preview": label})))
    atomic_write_all(writers)
    return dict(outputs.items())


__all__ = ["check_outputs", "write_outputs"]
