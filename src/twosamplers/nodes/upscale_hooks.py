"""Impact Pack's PK_HOOK schedules for the iterative upscalers: CfgScheduleHookProvider, DenoiseScheduleHookProvider,
StepsScheduleHookProvider and PixelKSampleHookCombine (docs/iterative-upscalers.md).

A hook changes the sampler settings of one upscale iteration. Iteration i of n (0-based) is at progress i / (n - 1)
(1.0 when n == 1) and the value moves linearly from the sampler's own setting to the hook's target:
cfg and steps are truncated to whole numbers as upstream does (cfg 7.5 at progress 0 samples at cfg 7), denoise is
not. Upstream keeps the iteration in a mutable hook; ours are immutable: `adjust(settings, step, total)` returns new
settings, so one hook may serve several upscalers at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import MAX_CFG, MAX_STEPS, check_choice, check_float, check_int

CATEGORY = "ImpactPack/Upscale"
SCHEDULES = ("simple",)


def _progress(step: int, total: int) -> float | None:
    """step / (total - 1), or None where there is one iteration only (the target applies)."""
    return step / (total - 1) if total > 1 else None


@dataclass(frozen=True)
class CfgScheduleHook:
    target_cfg: float

    def adjust(self, settings: dict, step: int, total: int) -> dict:
        p = _progress(step, total)
        cfg = self.target_cfg if p is None else int(settings["cfg"] + (self.target_cfg - settings["cfg"]) * p)
        return {**settings, "cfg": cfg}


@dataclass(frozen=True)
class DenoiseScheduleHook:
    target_denoise: float

    def adjust(self, settings: dict, step: int, total: int) -> dict:
        p = _progress(step, total)
        d = self.target_denoise if p is None else settings["denoise"] + (self.target_denoise - settings["denoise"]) * p
        return {**settings, "denoise": d}


@dataclass(frozen=True)
class StepsScheduleHook:
    target_steps: int

    def adjust(self, settings: dict, step: int, total: int) -> dict:
        p = _progress(step, total)
        steps = self.target_steps if p is None else int(settings["steps"] + (self.target_steps - settings["steps"]) * p)
        return {**settings, "steps": steps}


@dataclass(frozen=True)
class CombinedHook:
    """hook1, then hook2 on hook1's result."""

    hook1: object
    hook2: object

    def adjust(self, settings: dict, step: int, total: int) -> dict:
        return self.hook2.adjust(self.hook1.adjust(settings, step, total), step, total)


def check_hook(hook, name: str):
    """None or a PK_HOOK (an object with .adjust(settings, step, total))."""
    if hook is not None and not callable(getattr(hook, "adjust", None)):
        raise TypeError(f"{name} must be a PK_HOOK (from CfgScheduleHookProvider, DenoiseScheduleHookProvider, "
                        f"StepsScheduleHookProvider or PixelKSampleHookCombine); got {type(hook).__name__}")
    return hook


class CfgScheduleHookProvider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"schedule_for_iteration": (list(SCHEDULES),),
                             "target_cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0})}}

    RETURN_TYPES = ("PK_HOOK",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, schedule_for_iteration, target_cfg):
        check_choice("schedule_for_iteration", schedule_for_iteration, SCHEDULES)
        return (CfgScheduleHook(check_float("target_cfg", target_cfg, 0.0, min(100.0, MAX_CFG))),)


class DenoiseScheduleHookProvider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"schedule_for_iteration": (list(SCHEDULES),),
                             "target_denoise": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("PK_HOOK",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, schedule_for_iteration, target_denoise):
        check_choice("schedule_for_iteration", schedule_for_iteration, SCHEDULES)
        return (DenoiseScheduleHook(check_float("target_denoise", target_denoise, 0.0, 1.0)),)


class StepsScheduleHookProvider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"schedule_for_iteration": (list(SCHEDULES),),
                             "target_steps": ("INT", {"default": 20, "min": 1, "max": 10000})}}

    RETURN_TYPES = ("PK_HOOK",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, schedule_for_iteration, target_steps):
        check_choice("schedule_for_iteration", schedule_for_iteration, SCHEDULES)
        return (StepsScheduleHook(check_int("target_steps", target_steps, 1, min(10000, MAX_STEPS))),)


class PixelKSampleHookCombine:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"hook1": ("PK_HOOK",), "hook2": ("PK_HOOK",)}}

    RETURN_TYPES = ("PK_HOOK",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, hook1, hook2):
        return (CombinedHook(check_hook(hook1, "hook1"), check_hook(hook2, "hook2")),)


NODE_CLASSES = {
    "CfgScheduleHookProvider": CfgScheduleHookProvider,
    "DenoiseScheduleHookProvider": DenoiseScheduleHookProvider,
    "StepsScheduleHookProvider": StepsScheduleHookProvider,
    "PixelKSampleHookCombine": PixelKSampleHookCombine,
}

__all__ = ["NODE_CLASSES", "CfgScheduleHook", "CombinedHook", "DenoiseScheduleHook", "StepsScheduleHook",
           "check_hook", *NODE_CLASSES]
