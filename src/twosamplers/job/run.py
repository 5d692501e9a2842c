"""Running a `Job`: prepare (read inputs, load the model, size the output: every check before any sampling),
render (prompts, passes, decode), and write the outputs together.

    prepared = prepare_job(job, cache)        # all validation and loading; raises before any work
    result = render(prepared, callback=...)   # sampling
    write_outputs(result, Outputs(image="out.png", preview=..., latent=...))

`run_job` is the three in one. Front ends (CLI, UI, batch, workflow runner) differ only in how they make the
Job and present the result.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace

import torch

from .. import front
from ..front import SamplerSettings
from ..models.control import ControlNet
from ..models.registry import ModelCache, defaults_for
from .loras import prepare_loras
from .spec import Job, JobError


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
class Prepared:
    """A job whose inputs are read, models loaded and size resolved: nothing left that can be bad input.
    `model` is the job's model: it encodes the start image and decodes the result (the VAE); each pass samples
    with `pass_models[pass]` (its own model or the job's, with the pass's LoRAs)."""

    job: Job
    model: object
    mask: torch.Tensor
    pixels: torch.Tensor | None
    hints: dict | None = None  # ControlNet hint images by path
    pass_models: dict = field(default_factory=dict)  # "base"/"mask" -> the pass's model with its LoRAs
    prompts: dict = field(default_factory=dict)  # "base"/"mask" -> the prompt without its <lora:...> tags
    embeddings: object = None  # an EmbeddingLibrary, or None


@dataclass
class JobResult:
    """What a render produced: `image` (1, H, W, 3), `samples` (the latent), `base_preview` (the base pass's
    last x0 as an image, when asked for), the job as run (sizes resolved) and the seconds it took."""

    job: Job
    mask: torch.Tensor
    image: torch.Tensor
    samples: torch.Tensor
    base_preview: torch.Tensor | None
    seconds: float


def load_inputs(job: Job) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mask (from its file or the job's tensor) and the start image, if any."""
    from ..imageio import load_image, load_mask

    mask = job.mask_tensor if job.mask_tensor is not None else load_mask(job.mask, job.mask_channel,
                                                                         job.invert_mask)
    pixels = load_image(job.image) if job.image is not None else None
    return mask, pixels


def resolve_size(job: Job, mask_hw: tuple[int, int], image_hw: tuple[int, int] | None, factor: int) -> Job:
    """Width and height: the image's; else the given ones (a missing side from the mask's aspect ratio); else
    about the model's default area with the mask's aspect ratio, on the model's grid."""
    from ..imageio import check_aspect

    w, h = job.width, job.height
    mh, mw = mask_hw
    if image_hw is not None:
        for key, given, v in (("width", w, image_hw[1]), ("height", h, image_hw[0])):
            if given is not None and given != v:
                raise JobError(key, f"{given} differs from the image's {key} {v}; resize the image instead")
        h, w = image_hw
    size = defaults_for(job.model).size
    if w is None and h is None:
        w = h = size
        if mw != mh:  # keep the mask's aspect ratio at about size^2 pixels, on the model's grid
            scale = math.sqrt(size * size / (mw * mh))
            w, h = (max(factor, round(v * scale / factor) * factor) for v in (mw, mh))
    elif w is None:
        w = max(factor, round(h * mw / mh / factor) * factor)
    elif h is None:
        h = max(factor, round(w * mh / mw / factor) * factor)
    for key, v in (("width", w), ("height", h)):
        if v % factor:
            raise JobError(key, f"{v} is not a multiple of {factor}, which the model {job.model!r} needs")
    try:
        check_aspect((mh, mw), (h, w))
    except ValueError as e:
        raise JobError("mask", str(e)) from None
    return replace(job, width=w, height=h)


def prepare_job(job: Job, cache: ModelCache | None = None, *, load_options: dict | None = None,
                check_memory: bool = True) -> Prepared:
    """Everything that can fail on bad input, before any sampling: inputs, models, sizes, prompts, and (unless
    `check_memory` is False) the memory estimate against what the machine has (JobError field "memory").
    `load_options`: device / dtype / allow_pickle for checkpoints (the machine's business, not the job's).
    Every model the job uses is loaded here (once each, through `cache`) and must share the job model's latent
    format; the job's model sizes the image and encodes/decodes it, each pass samples with its own."""
    from .trust import check_models

    cache = ModelCache() if cache is None else cache
    mask, pixels = load_inputs(job)
    options = model_options(job)
    options.update({k: v for k, v in (load_options or {}).items() if v})
    check_models(job)  # a model the user did not give is local: never a download
    model = cache.get(job.model, **loader_options(job.model, options))
    pass_bases = load_pass_models(job, model, cache, options)
    factor = int(model.latent_format.downscale)
    job = resolve_size(job, tuple(mask.shape[-2:]), None if pixels is None else tuple(pixels.shape[1:3]), factor)
    side = max(job.width, job.height)
    if job.feather > side:
        raise JobError("feather", f"{job.feather:g} is wider than the image ({job.width}x{job.height} px); "
                       f"accepted: 0 .. {side}")
    if check_memory:
        from .memory import memory_problem

        problem = memory_problem([model, *pass_bases.values()], job.width, job.height)
        if problem:
            raise JobError("memory", f"{problem}; render a smaller image, or override the check "
                           "(--ignore-memory-limit; check_memory=False)")
    hints = load_hints(job)
    job, pass_models, prompts, library = prepare_loras(job, pass_bases,
                                                      allow_pickle=bool(options.get("allow_pickle")))
    return Prepared(job, model, mask, pixels, hints, pass_models, prompts, library)


def load_pass_models(job: Job, model, cache: ModelCache, options: dict) -> dict:
    """{pass: the model it samples with} (the job's `model` where a pass names none), each loaded once through
    `cache` with the same loading options; a pass model that cannot load, or whose latent format differs from
    the job model's (which encodes and decodes the image), is a JobError naming its field."""
    out = {}
    for which in ("base", "mask"):
        name = job.pass_spec(which).model
        if name is None:
            out[which] = model
            continue
        key = f"{which}_model"
        try:
            out[which] = cache.get(name, **loader_options(name, options))
        except (ValueError, OSError, TypeError) as e:
            raise JobError(key, f"cannot load {name!r}: {' '.join(str(e).split())}") from None
        differ = latent_mismatch(model, out[which])
        if differ:
            raise JobError(key, f"{name!r} has latents of {differ[1]}, but the job's model {job.model!r} "
                           f"(which encodes and decodes the image) has {differ[0]}; the passes' models "
                           "must share the job model's latent format")
    return out


def loader_options(name: str, options: dict) -> dict:
    """`options` for loading model `name`: allow_pickle is a permission for checkpoint files, not an option of
    the built-in models (which read no file), so it is dropped for them."""
    from ..models.registry import CHECKPOINT, loader_for

    if loader_for(name) is CHECKPOINT:
        return options
    return {k: v for k, v in options.items() if k != "allow_pickle"}


def model_options(job: Job) -> dict:
    """The job's options for loading each of its checkpoints (clip_skip, prediction), where it sets them."""
    return {k: getattr(job, k) for k in ("clip_skip", "prediction") if getattr(job, k) is not None}


def latent_mismatch(model, other) -> tuple[str, str] | None:
    """None when `other` samples the latents `model` encodes (same channels and scale), else both formats
    described ("4 channels at 1/8 scale"), `model`'s first."""
    ours, theirs = (f"{int(m.latent_format.channels)} channels at 1/{int(m.latent_format.downscale)} scale"
                    for m in (model, other))
    return None if ours == theirs else (ours, theirs)


def load_hints(job: Job) -> dict:
    """The ControlNet hint images of both passes by path; a missing ControlNet or hint file names its field."""
    from pathlib import Path

    from ..imageio import load_image

    hints = {}
    for which in ("base", "mask"):
        for i, c in enumerate(job.pass_spec(which).controlnets):
            key = f"{which}_controlnets[{i}]"
            if not Path(c["file"]).exists():
                raise JobError(key, f"ControlNet not found: {c['file']}")
            if c["image"] not in hints:
                try:
                    hints[c["image"]] = load_image(c["image"])
                except (OSError, ValueError) as e:
                    raise JobError(key, f"cannot read the hint image {c['image']}: {e}") from None
    return hints


def pass_settings(prep: Prepared, which: str) -> SamplerSettings:
    """One pass: its model (with its LoRA stack) encodes its prompts (with the embeddings) and samples."""
    job = prep.job
    model = prep.pass_models.get(which, prep.model)
    spec = job.pass_spec(which)
    prompt = prep.prompts.get(which, job.base_prompt if which == "base" else job.mask_prompt)
    extra = {"embeddings": prep.embeddings} if prep.embeddings is not None else {}
    controlnets = [ControlNet(c["file"], prep.hints[c["image"]], c["strength"], c["start_percent"],
                              c["end_percent"]) for c in spec.controlnets]
    return SamplerSettings(model, model.encode_prompt(prompt, **extra), model.encode_prompt(spec.negative, **extra),
                           seed=spec.seed, steps=spec.steps, cfg=spec.cfg, sampler_name=spec.sampler,
                           scheduler=spec.scheduler, denoise=spec.denoise, controlnets=controlnets,
                           comfyui_version=job.comfyui_version)


def render(prep: Prepared, *, callback=None, disable_pbar=None, want_base_preview: bool = False) -> JobResult:
    """Sample and decode. callback(step, x0, x, total) over both passes."""
    from ..latent import empty_latent

    t0 = time.perf_counter()
    job, model = prep.job, prep.model
    fmt = model.latent_format
    base, inside = pass_settings(prep, "base"), pass_settings(prep, "mask")
    if prep.pixels is not None:
        latent = {"samples": model.encode_image(prep.pixels)}
    else:
        latent = empty_latent(job.width, job.height, channels=fmt.channels, downscale=int(fmt.downscale))
    captured = {}
    step_fn = callback
    if want_base_preview and job.mode == "two-pass":
        n_base = base.n_steps()

        def step_fn(step, x0, x, total):
            if step == n_base - 1:  # the base pass's last denoised prediction: its result, for the preview
                captured["base"] = x0.detach().clone()
            if callback is not None:
                callback(step, x0, x, total)

    out = front.two_samplers_for_mask(
        latent, prep.mask, base, inside, mode=job.mode, inversion=job.inversion,
        base_covers_mask=job.base_covers_mask, grow=job.grow, feather=job.feather, differential=job.differential,
        crop_to_mask=job.crop_to_mask, crop_context=job.crop_context, overlap_factor=job.overlap_factor,
        base_only_steps=job.base_only_steps, inpaint_conditioning=job.inpaint_conditioning, callback=step_fn,
        disable_pbar=disable_pbar)
    samples = out["samples"]
    image = model.decode_latent(samples)
    preview = model.decode_latent(fmt.process_out(captured["base"])) if "base" in captured else None
    return JobResult(job, prep.mask, image, samples, preview, time.perf_counter() - t0)


def run_job(job: Job, cache: ModelCache | None = None, *, outputs: Outputs | None = None, callback=None,
            disable_pbar=None, load_options: dict | None = None, inputs: dict[str, str] | None = None,
            check_memory: bool = True) -> JobResult:
    """check_outputs, prepare_job, then render, then (when `outputs` names any) write_outputs; returns the result.
    `inputs`: further input files by field (e.g. {"from": png}) that no output may overwrite."""
    from .outputs import check_outputs, write_outputs

    outputs = outputs or Outputs()
    check_outputs(outputs, job, inputs=inputs)
    prep = prepare_job(job, cache, load_options=load_options, check_memory=check_memory)
    result = render(prep, callback=callback, disable_pbar=disable_pbar,
                    want_base_preview=outputs.preview is not None)
    if outputs.items():
        write_outputs(result, outputs)
    return result


def metadata(job: Job) -> dict:
    """What the PNG's settings chunk stores: the normalised job plus the package version."""
    from .. import __version__

    return {**job.to_dict(), "twosamplers_version": __version__}


def metadata_json(job: Job) -> str:
    return json.dumps(metadata(job), sort_keys=True)


__all__ = ["JobResult", "Outputs", "Prepared", "latent_mismatch", "load_inputs", "metadata", "model_options",
           "pass_settings", "prepare_job", "render", "resolve_size", "run_job"]
