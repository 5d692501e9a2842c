"""Impact Pack's BASIC_PIPE nodes: a (model, clip, vae, positive, negative) tuple and its editors."""

from __future__ import annotations

from .providers import check_basic_pipe

CATEGORY = "ImpactPack/Pipe"


class ToBasicPipe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",),
                             "positive": ("CONDITIONING",), "negative": ("CONDITIONING",)}}

    RETURN_TYPES = ("BASIC_PIPE",)
    RETURN_NAMES = ("basic_pipe",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, model, clip, vae, positive, negative):
        return ((model, clip, vae, positive, negative),)


class FromBasicPipe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"basic_pipe": ("BASIC_PIPE",)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("model", "clip", "vae", "positive", "negative")
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, basic_pipe):
        return check_basic_pipe(basic_pipe)


class FromBasicPipe_v2:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"basic_pipe": ("BASIC_PIPE",)}}

    RETURN_TYPES = ("BASIC_PIPE", "MODEL", "CLIP", "VAE", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("basic_pipe", "model", "clip", "vae", "positive", "negative")
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, basic_pipe):
        pipe = check_basic_pipe(basic_pipe)
        return (pipe, *pipe)


class EditBasicPipe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"basic_pipe": ("BASIC_PIPE",)},
                "optional": {"model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",),
                             "positive": ("CONDITIONING",), "negative": ("CONDITIONING",)}}

    RETURN_TYPES = ("BASIC_PIPE",)
    RETURN_NAMES = ("basic_pipe",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, basic_pipe, model=None, clip=None, vae=None, positive=None, negative=None):
        old = check_basic_pipe(basic_pipe)
        new = (model, clip, vae, positive, negative)
        return (tuple(n if n is not None else o for n, o in zip(new, old, strict=True)),)


__all__ = ["EditBasicPipe", "FromBasicPipe", "FromBasicPipe_v2", "ToBasicPipe"]
