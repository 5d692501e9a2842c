"""The passes of regional mode: the job's base and mask passes (as `twosamplers generate` makes them, LoRAs,
ControlNets and embeddings included), plus regions 2.. which are not part of a Job, made here the same way.

A region brings its own model (or the base's), its LoRA stack (entries, then the <lora:...> tags of its prompt,
looked up in the job's lora_dir), its ControlNets with their hint images, and the job's embeddings. Everything
is read and checked before any sampling; errors name the region and the field ("region 2 loras[0]: ...").
"""

from __future__ import annotations

import re
from pathlib import Path

from ..front import SamplerSettings
from ..models.control import ControlNet
from ..models.lora import LoraError, can_patch, with_loras
from .handlers import own_model


def region_settings(prep, region: dict, number: int, cache) -> SamplerSettings:
    """Region `number`'s pass (a validated region dict of handlers.validate_region) for regional_sample."""
    from ..job.loras import resolve_stack
    from ..job.run import latent_mismatch, model_options

    job, label = prep.job, f"region {number}"
    model = prep.model
    own = own_model(region.get("model"))
    if own is not None and own != job.model:
        try:
            model = cache.get(own, **model_options(job))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{label} model: cannot load {own!r}: {e}") from None
        differ = latent_mismatch(prep.model, model)
        if differ:
            raise ValueError(f"{label} model: {own!r} has latents of {differ[1]}, but the base's model "
                             f"{job.model!r} has {differ[0]}; the regions' models must share its latent format")
    try:
        prompt, stack = resolve_stack(region.get("loras") or (), region.get("prompt", ""), job.lora_dir, job)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{label} loras: {e}") from None
    if stack and not can_patch(model):
        name = own or job.model
        raise ValueError(f"{label} loras: LoRAs need a Stable Diffusion, Flux or SD3 checkpoint; {name!r} is not "
                         "one")
    try:
        model = with_loras(model, [p.lora for p in stack])
    except LoraError as e:
        raise ValueError(f"{label} loras: {e}") from None
    extra = {"embeddings": prep.embeddings} if prep.embeddings is not None else {}
    return SamplerSettings(model, model.encode_prompt(prompt, **extra),
                           model.encode_prompt(region.get("negative", ""), **extra), seed=region["seed"],
                           steps=region["steps"], cfg=region["cfg"], sampler_name=region["sampler"],
                           scheduler=region["scheduler"], denoise=region["denoise"],
                           controlnets=_controlnets(region.get("controlnets") or (), label),
                           comfyui_version=job.comfyui_version)


def _controlnets(entries, label: str) -> list[ControlNet]:
    from ..imageio import load_image

    out = []
    for i, c in enumerate(entries):
        key = f"{label} controlnets[{i}]"
        if not Path(c["file"]).exists():
            raise ValueError(f"{key}: ControlNet not found: {c['file']}")
        try:
            hint = load_image(c["image"])
        except (OSError, ValueError) as e:
            raise ValueError(f"{key}: cannot read the hint image {c['image']}: {e}") from None
        out.append(ControlNet(c["file"], hint, c["strength"], c["start_percent"], c["end_percent"]))
    return out


def joint_note(base: SamplerSettings, passes: list[SamplerSettings]) -> str | None:
    """What the page says about mode "joint" with these passes: that it falls back to interleaving (regions with
    another model, LoRAs or ControlNets), or which region settings it does not use (the front door also warns
    in the server's log); None when neither."""
    from ..joint import ignored_settings, joint_blockers

    blockers = joint_blockers(base, passes)
    if blockers:
        return _page_numbers("joint fell back to interleaved: " + "; ".join(blockers))
    ignored = ignored_settings(base, passes)
    if ignored:
        return _page_numbers("joint uses the base's cfg, sampler and scheduler; not used: " + ", ".join(ignored))
    return None


def _page_numbers(text: str) -> str:
    """The front door's regions[j] (0 = the mask pass) as the page numbers them (region j + 1)."""
    return re.sub(r"regions\[(\d+)\](\.?)", lambda m: f"region {int(m.group(1)) + 1}" + (" " if m.group(2) else ""),
                  text)
