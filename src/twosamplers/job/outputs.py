"""A job's outputs: checked before any work (`check_outputs`), written together and atomically
(`write_outputs`: every file to a temporary file first, then every rename), so a failure or Ctrl-C while
writing leaves each target as it was.

An output path that is a symbolic link is followed: the file it points to is replaced (atomically) and the link
stays. Errors name the output's field and the path as given, never a temporary file."""

from __future__ import annotations

import json

from .._files import atomic_write_all
from .._paths import PathError, resolve_output
from .._paths import check_outputs as check_paths
from .run import JobResult, Outputs, metadata
from .spec import Job, JobError

_FLAG = {"image": "output", "preview": "preview", "latent": "save_latent"}


def check_outputs(outputs: Outputs, job: Job | None = None, inputs: dict[str, str] | None = None) -> None:
    """Every output path can be written (its folder exists and takes a new file; not a folder, device or FIFO),
    and no output is the same file as another output or as an input (the job's image and mask files, plus
    `inputs`, e.g. {"from": png}). Raises JobError naming the output."""
    ins = dict(job.input_files()) if job is not None else {}
    ins.update({k: v for k, v in (inputs or {}).items() if v is not None})
    try:
        check_paths({_FLAG[key]: path for key, path in outputs.items()}, ins)
    except PathError as e:
        raise JobError(e.field, e.message) from None


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
    atomic_write_all([(resolve_output(path), write) for path, write in writers], shown=[p for p, _ in writers])
    return dict(outputs.items())


__all__ = ["check_outputs", "write_outputs"]
