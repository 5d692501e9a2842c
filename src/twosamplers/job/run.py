"""Running a `Job`: prepare (read inputs, load the model, size the output: every check before any sampling),
render (prompts, passes, decode), and write the outputs together.

    prepared = prepare_job(job, cache)        # all validation and loading; raises before any work
    result = render(prepared, callback=...)   # sampling
    write_outputs(result, Outputs(image="out.png", preview=..., latent=...))

`run_job` is the three in one. Front ends (CLI, UI, batch, workflow runner) differ only in how they make the
Job and present the result. A job has a base pass and one pass per region; everything here works on
`job.passes()` ("base", then each region's index), so a region's model, LoRAs, ControlNets and prompt are
loaded and checked exactly as the base's are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from .._checks import check_feather_width
from ..engine import front
from ..engine.front import SamplerSettings
from ..models.control import ControlNet
from ..models.registry import ModelCache, defaults_for
from .fields import JobError, checked, region_words
from .loras import prepare_loras
from .outputs import JobResult, Outputs, check_outputs, write_outputs
from .spec import Job


class PassMap(dict):
    """{pass: value} keyed as `job.passes()` ("base", region indices), where "mask" also names region 0 (the
    two-pass job's mask pass)."""

    def __getitem__(self, key):
        return super().__getitem__(0 if key == "mask" else key)

    def get(self, key, default=None):
        return super().get(0 if key == "mask" else key, default)

    def __contains__(self, key) -> bool:
        return super().__contains__(0 if key == "mask" else key)


@dataclass
class Prepared:
    """A job whose inputs are read, models loaded and size resolved: nothing left that can be bad input.
    `model` is the job's model: it encodes the start image and decodes the result (the VAE); each pass samples
    with `pass_models[pass]` (its own model or the job's, with the pass's LoRAs); `masks` holds every region's
    mask as read (region order)."""

    job: Job
    model: object
    masks: list
    pixels: torch.Tensor | None
    hints: dict | None = None  # ControlNet hint images by path
    pass_models: dict = field(default_factory=dict)  # "base" / region index -> the pass's model with its LoRAs
    prompts: dict = field(default_factory=dict)  # "base" / region index -> the prompt without its <lora:...> tags
    embeddings: object = None  # an EmbeddingLibrary, or None

    @property
    def mask(self) -> torch.Tensor:
        """Region 1's mask (the two-pass job's mask)."""
        return self.masks[0]


def load_masks(job: Job) -> list[torch.Tensor]:
    """Every region's mask: its tensor, else its file read with the job's channel and inversion."""
    from .imageio import read_mask_file

    out = []
    for i, r in enumerate(job.regions):
        if r.mask_tensor is not None:
            out.append(r.mask_tensor)
            continue
        try:
            out.append(read_mask_file(r.mask, job.mask_channel, job.invert_mask))
        except (OSError, ValueError) as e:
            if len(job.regions) == 1:
                raise  # the one-region job's error as it always was: the file's problem, named by the CLI
            raise JobError(job.field(i, "mask"), " ".join(str(e).split())) from None
    return out


def load_inputs(job: Job) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Region 1's mask and the start image, if any (`load_masks` gives every region's)."""
    from .imageio import load_image

    return load_masks(job)[0], load_image(job.image) if job.image is not None else None


def resolve_size(job: Job, mask_hw, image_hw: tuple[int, int] | None, factor: int) -> Job:
    """Width and height: the image's; else the given ones (a missing side from region 1's mask's aspect ratio);
    else about the model's default area with that aspect ratio, on the model's grid. `mask_hw`: region 1's mask
    size (h, w), or a list of every region's (each must have the image's aspect ratio: the one rule of masks)."""
    from .imageio import check_aspect

    sizes = [tuple(mask_hw)] if isinstance(mask_hw[0], int) else [tuple(hw) for hw in mask_hw]
    w, h = job.width, job.height
    mh, mw = sizes[0]
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
    for i, hw in enumerate(sizes):
        try:
            check_aspect(hw, (h, w))
        except ValueError as e:
            raise JobError(job.field(i, "mask"), str(e)) from None
    return replace(job, width=w, height=h)


def prepare_job(job: Job, cache: ModelCache | None = None, *, load_options: dict | None = None,
                check_memory: bool = True) -> Prepared:
    """Everything that can fail on bad input, before any sampling: inputs, models, sizes, prompts, and (unless
    `check_memory` is False) the memory estimate against what the machine has (JobError field "memory").
    `load_options`: device / dtype / allow_pickle for checkpoints (the machine's business, not the job's).
    Every model the job uses is loaded here (once each, through `cache`) and must share the job model's latent
    format; the job's model sizes the image and encodes/decodes it, each pass samples with its own."""
    from .imageio import load_image
    from .trust import check_models

    cache = ModelCache() if cache is None else cache
    masks = load_masks(job)
    pixels = load_image(job.image) if job.image is not None else None
    options = model_options(job)
    options.update({k: v for k, v in (load_options or {}).items() if v})
    check_models(job)  # a model the user did not give is local: never a download
    model = cache.get(job.model, **loader_options(job.model, options))
    pass_bases = load_pass_models(job, model, cache, options)
    factor = int(model.latent_format.downscale)
    job = resolve_size(job, [tuple(m.shape[-2:]) for m in masks], None if pixels is None else
                       tuple(pixels.shape[1:3]), factor)
    checked(lambda _key, v: check_feather_width(v, job.width, job.height), "feather", job.feather)
    if check_memory:
        from .memory import memory_problem

        problem = memory_problem([model, *pass_bases.values()], job.width, job.height)
        if problem:
            raise JobError("memory", f"{problem}; render a smaller image, or override the check "
                           "(--ignore-memory-limit; check_memory=False)")
    hints = load_hints(job)
    job, pass_models, prompts, library = prepare_loras(job, pass_bases,
                                                      allow_pickle=bool(options.get("allow_pickle")))
    return Prepared(job, model, masks, pixels, hints, PassMap(pass_models), PassMap(prompts), library)


def load_pass_models(job: Job, model, cache: ModelCache, options: dict) -> dict:
    """{pass: the model it samples with} (the job's `model` where a pass names none), each loaded once through
    `cache` with the same loading options; a pass model that cannot load, or whose latent format differs from
    the job model's (which encodes and decodes the image), is a JobError naming its field."""
    out = {}
    for which in job.passes():
        name = job.pass_spec(which).model
        if name is None:
            out[which] = model
            continue
        key = job.field(which, "model")
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
    ours, theirs = (_latent_text(m.latent_format) for m in (model, other))
    return None if ours == theirs else (ours, theirs)


def _latent_text(fmt) -> str:
    """"4 channels at 1/8 scale"; formats with a shift (Flux, SD3: same shape, other latent spaces) also name
    their scale and shift."""
    text = f"{int(fmt.channels)} channels at 1/{int(fmt.downscale)} scale"
    shift = getattr(fmt, "shift_factor", 0.0)
    return f"{text} (scale {fmt.scale_factor:g}, shift {shift:g})" if shift else text


def load_hints(job: Job) -> dict:
    """The ControlNet hint images of every pass by path; a missing ControlNet or hint file names its field."""
    from pathlib import Path

    from .imageio import load_image

    hints = {}
    for which in job.passes():
        for i, c in enumerate(job.pass_spec(which).controlnets):
            key = f"{job.field(which, 'controlnets')}[{i}]"
            if not Path(c["file"]).exists():
                raise JobError(key, f"ControlNet not found: {c['file']}")
            if c["image"] not in hints:
                try:
                    hints[c["image"]] = load_image(c["image"])
                except (OSError, ValueError) as e:
                    raise JobError(key, f"cannot read the hint image {c['image']}: {e}") from None
    return hints


def pass_settings(prep: Prepared, which) -> SamplerSettings:
    """One pass ("base", a region's index, or "mask" for region 1): its model (with its LoRA stack) encodes its
    prompts (with the embeddings) and samples."""
    job = prep.job
    key = "base" if which == "base" else (0 if which == "mask" else int(which))
    model = prep.pass_models.get(key, prep.model)
    spec = job.pass_spec(key)
    prompt = prep.prompts.get(key, job.pass_prompt(key))
    extra = {"embeddings": prep.embeddings} if prep.embeddings is not None else {}
    controlnets = [ControlNet(c["file"], prep.hints[c["image"]], c["strength"], c["start_percent"],
                              c["end_percent"]) for c in spec.controlnets]
    return SamplerSettings(model, model.encode_prompt(prompt, **extra), model.encode_prompt(spec.negative, **extra),
                           seed=spec.seed, steps=spec.steps, cfg=spec.cfg, sampler_name=spec.sampler,
                           scheduler=spec.scheduler, denoise=spec.denoise, controlnets=controlnets,
                           comfyui_version=job.comfyui_version)


def render(prep: Prepared, *, callback=None, disable_pbar=None, want_base_preview: bool = False) -> JobResult:
    """Sample and decode through the front door: `two_samplers_for_mask` in mode two-pass (one region),
    `regional_sample` with every region in the other modes. callback(step, x0, x, total) over the whole job.
    The job checked every mask's aspect ratio at its entrance (`resolve_size`, the one rule), so the front
    door is told not to check it again (stretch_mask)."""
    from ..engine.latent import empty_latent

    t0 = time.perf_counter()
    job, model = prep.job, prep.model
    fmt = model.latent_format
    base = pass_settings(prep, "base")
    regions = [(m, pass_settings(prep, i)) for i, m in enumerate(prep.masks)]
    if prep.pixels is not None:
        latent = {"samples": model.encode_image(prep.pixels)}
    else:
        latent = empty_latent(job.width, job.height, channels=fmt.channels, downscale=int(fmt.downscale))
    captured, note = {}, None
    if job.mode == "two-pass":
        step_fn = callback
        if want_base_preview:
            n_base = base.n_steps()

            def step_fn(step, x0, x, total):
                if step == n_base - 1:  # the base pass's last denoised prediction: its result, for the preview
                    captured["base"] = x0.detach().clone()
                if callback is not None:
                    callback(step, x0, x, total)

        out = front.two_samplers_for_mask(
            latent, prep.masks[0], base, regions[0][1], mode=job.mode, inversion=job.inversion,
            base_covers_mask=job.base_covers_mask, grow=job.grow, feather=job.feather,
            differential=job.differential, crop_to_mask=job.crop_to_mask, crop_context=job.crop_context,
            overlap_factor=job.overlap_factor, base_only_steps=job.base_only_steps,
            inpaint_conditioning=job.inpaint_conditioning, callback=step_fn, disable_pbar=disable_pbar,
            stretch_mask=True)
    else:
        note = joint_note(base, [s for _, s in regions]) if job.mode == "joint" else None
        out = front.regional_sample(latent, base, regions, mode=job.mode, grow=job.grow, feather=job.feather,
                                    overlap_factor=job.overlap_factor, base_only_steps=job.base_only_steps,
                                    callback=callback, disable_pbar=disable_pbar, stretch_mask=True)
    samples = out["samples"]
    image = model.decode_latent(samples)
    preview = model.decode_latent(fmt.process_out(captured["base"])) if "base" in captured else None
    return JobResult(job, prep.masks[0], image, samples, preview, time.perf_counter() - t0,
                     masks=tuple(prep.masks), note=note)


def joint_note(base: SamplerSettings, passes: list[SamplerSettings]) -> str | None:
    """What mode "joint" does with these passes, in a line for people (None when it samples them as asked): that
    it falls back to interleaving (regions with another model, LoRAs or ControlNets), or which region settings
    it does not use. The front door also warns; a page shows this line."""
    from ..engine.joint import ignored_settings, joint_blockers

    blockers = joint_blockers(base, passes)
    if blockers:
        text = "joint fell back to interleaved: " + "; ".join(blockers)
    else:
        ignored = ignored_settings(base, passes)
        if not ignored:
            return None
        text = "joint uses the base's cfg, sampler and scheduler; not used: " + ", ".join(ignored)
    return region_words(text)


def preview_masks(job: Job, masks: list, downscale: int) -> list[torch.Tensor]:
    """Every region's mask as this job's sampler will see it (its mode, grow, feather, overlap_factor), at each
    mask's own resolution: `front.sampler_masks`, the function the sampler itself runs, so a page's "mask as the
    sampler sees it" preview is the sampler's mask. `downscale`: the job model's latent scale (1 for the built-in
    models, 8 for SD); the image size is the job's, else region 1's mask's."""
    h, w = (job.height, job.width) if job.width and job.height else tuple(masks[0].shape[-2:])
    return front.sampler_masks(masks, (max(1, h // downscale), max(1, w // downscale)), downscale, mode=job.mode,
                               grow=job.grow, feather=job.feather, overlap_factor=job.overlap_factor)


def job_preview_masks(job: Job, cache: ModelCache | None = None) -> list[torch.Tensor]:
    """`preview_masks` for a job before it runs: its masks (tensors or files), its size resolved as `prepare_job`
    resolves it, its model loaded through `cache` (the one its render will use) for the latent scale."""
    cache = ModelCache() if cache is None else cache
    masks = load_masks(job)
    scale = int(cache.get(job.model, **loader_options(job.model, model_options(job))).latent_format.downscale)
    job = resolve_size(job, [tuple(m.shape[-2:]) for m in masks], None, scale)
    return preview_masks(job, masks, scale)


def run_job(job: Job, cache: ModelCache | None = None, *, outputs: Outputs | None = None, callback=None,
            disable_pbar=None, load_options: dict | None = None, inputs: dict[str, str] | None = None,
            check_memory: bool = True) -> JobResult:
    """check_outputs, prepare_job, then render, then (when `outputs` names any) write_outputs; returns the result.
    `inputs`: further input files by field (e.g. {"from": png}) that no output may overwrite."""
    outputs = outputs or Outputs()
    check_outputs(outputs, job, inputs=inputs)
    prep = prepare_job(job, cache, load_options=load_options, check_memory=check_memory)
    result = render(prep, callback=callback, disable_pbar=disable_pbar,
                    want_base_preview=outputs.preview is not None)
    if outputs.items():
        write_outputs(result, outputs)
    return result


__all__ = ["Prepared", "job_preview_masks", "joint_note", "latent_mismatch", "load_inputs", "load_masks",
           "model_options", "pass_settings", "prepare_job", "preview_masks", "render", "resolve_size", "run_job"]
