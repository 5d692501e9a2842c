"""A job's results and where they go: `JobResult` (what a render produced), `Outputs` (the paths), `metadata`
(what the PNG stores), checked before any work (`check_outputs`), written together and atomically
(`write_outputs`: every file to a temporary file first, then every rename), so a failure or Ctrl-C while writing
leaves each target as it was.

An output path that is a symbolic link is followed: the file it points to is replaced (atomically) and the link
stays. Errors name the output's field and the path as given, never a temporary file."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from .._files import atomic_write_all
from .._paths import PathError, resolve_output
from .._paths import check_outputs as check_paths
from .fields import JobError
from .spec import Job

_FLAG = {"image": "output", "preview": "preview", "latent": "save_latent"}


@dataclass(frozen=True)
class Outputs:
    """Where a job's outputs go (None: not written)."""

    image: str | None = None
    preview: str | None = None
    latent: str | None = None

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in (("image", self.image), ("preview", self.preview), ("latent", self.latent))
                if v is not None]


@dataclass
class JobResult:
    """What a render produced: `image` (1, H, W, 3), `samples` (the latent), `base_preview` (the base pass's
    last x0 as an image, when asked for), the job as run (sizes resolved), the seconds it took, and every
    region's mask as given (`masks`; `mask` is region 1's)."""

    job: Job
    mask: torch.Tensor
    image: torch.Tensor
    samples: torch.Tensor
    base_preview: torch.Tensor | None
    seconds: float
    masks: tuple = ()
    note: str | None = None  # a line about how the regions were sampled (mode joint's fall-back), or None

    def __post_init__(self) -> None:
        if not self.masks:
            self.masks = (self.mask,)


def metadata(job: Job) -> dict:
    """What the PNG's settings chunk stores: the normalised job plus the package version."""
    from .. import __version__

    return {**job.to_dict(), "twosamplers_version": __version__}


def metadata_json(job: Job) -> str:
    return json.dumps(metadata(job), sort_keys=True)


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
    """Write the image (with the job in its metadata and every region's mask embedded), the preview strip
    (mask | base | result for one region, masks | result for several) and the latent, all or none. Returns
    {output: path}."""
    from ..engine.latent import latent_writer
    from .imageio import png_writer, resize_mask, side_by_side, to_uint8

    stored = metadata(result.job)
    writers = []
    if outputs.image is not None:
        writers.append((outputs.image, png_writer(result.image[:1], settings=stored, masks=list(result.masks))))
    if outputs.latent is not None:
        meta = {"twosamplers": json.dumps(stored, sort_keys=True)}
        writers.append((outputs.latent, latent_writer({"samples": result.samples}, metadata=meta)))
    if outputs.preview is not None:
        h, w = result.image.shape[1:3]
        tiles = [to_uint8(resize_mask(m, h, w)[..., None].expand(h, w, 3).clamp(0, 1)) for m in result.masks]
        if result.base_preview is not None:
            tiles.append(to_uint8(result.base_preview[0]))
        tiles.append(to_uint8(result.image[0]))
        label = "mask | base | result" if result.base_preview is not None else \
            ("mask | result" if len(result.masks) == 1 else "masks | result")
        writers.append((outputs.preview, png_writer(side_by_side(tiles), text={"twosamplers-preview": label})))
    atomic_write_all([(resolve_output(path), write) for path, write in writers], shown=[p for p, _ in writers])
    return dict(outputs.items())


__all__ = ["JobResult", "Outputs", "check_outputs", "metadata", "metadata_json", "write_outputs"]
