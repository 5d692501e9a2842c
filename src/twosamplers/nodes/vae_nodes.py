"""VAELoader, VAEDecodeTiled, VAEEncodeTiled and CheckpointLoader (a checkpoint with a config name).

VAELoader reads a file from the models/vae/ folders (`models.vae_file.load_vae_file`: SD1.x/SD2.x/SDXL KL
VAEs in the original or diffusers layout; anything else is refused naming what it looks like). The tiled
nodes take ComfyUI's tile sizes in pixels; models without a tiled coder (the embedded pixel-space models)
decode and encode whole, which for them is the same thing.

CheckpointLoader's config (ComfyUI's models/configs/*.yaml, or one of the names ComfyUI ships when the
file is not there) decides two things a single-file checkpoint cannot say: v-prediction
(`model.params.parameterization: v`) and the CLIP layer (`cond_stage_config.params.layer_idx`).
"""

from __future__ import annotations

from .._checks import check_int
from ..engine.latent import check_latent
from .core import FolderNode, _image, _vae
from .folders import Folders
from .handles import ClipHandle, ModelHandle, VaeHandle

# what the configs that ComfyUI ships say, for when the file itself is not in a configs/ folder
KNOWN_CONFIGS = {
    "v1-inference.yaml": ("eps", None), "v1-inference_fp16.yaml": ("eps", None),
    "v1-inference_clip_skip_2.yaml": ("eps", -2), "v1-inference_clip_skip_2_fp16.yaml": ("eps", -2),
    "anything_v3.yaml": ("eps", -2), "v1-inpainting-inference.yaml": ("eps", None),
    "v2-inference.yaml": ("eps", None), "v2-inference_fp32.yaml": ("eps", None),
    "v2-inference-v.yaml": ("v", None), "v2-inference-v_fp32.yaml": ("v", None),
    "v2-inpainting-inference.yaml": ("eps", None),
}


class VAELoader(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("vae") if folders is not None else []
        return {"required": {"vae_name": (names,)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"
    CATEGORY = "loaders"
    FILE_INPUTS = ("vae_name",)

    def check_inputs(self, vae_name):
        self.folders.resolve_model("vae", vae_name, "VAE")

    def load_vae(self, vae_name):
        return (VaeHandle(self.folders.load_vae(vae_name)),)


def _tiled_coder(vae: VaeHandle, method: str):
    fn = getattr(vae.model, method, None)
    return fn if callable(fn) else None


class VAEDecodeTiled:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT",), "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "_for_testing"

    def decode(self, vae, samples, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8):
        vae = _vae(vae)
        check_latent(samples, "samples")
        tile_size = check_int("tile_size", tile_size, 64, 4096)
        overlap = check_int("overlap", overlap, 0, 4096)
        check_int("temporal_size", temporal_size, 8, 4096)  # video VAEs only
        check_int("temporal_overlap", temporal_overlap, 4, 4096)
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        fn = _tiled_coder(vae, "decode_tiled")
        if fn is None:
            return (vae.decode(samples["samples"]),)
        f = vae.downscale_ratio
        return (fn(samples["samples"], tile_size // f, overlap // f),)


class VAEEncodeTiled:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pixels": ("IMAGE",), "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "_for_testing"

    def encode(self, vae, pixels, tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8):
        vae = _vae(vae)
        pixels = _image(pixels, "pixels")
        tile_size = check_int("tile_size", tile_size, 64, 4096)
        overlap = check_int("overlap", overlap, 0, 4096)
        check_int("temporal_size", temporal_size, 8, 4096)
        check_int("temporal_overlap", temporal_overlap, 4, 4096)
        if overlap >= tile_size // 2:
            raise ValueError(f"overlap ({overlap}) must be less than half of tile_size ({tile_size})")
        fn = _tiled_coder(vae, "encode_tiled")
        if fn is None:
            return ({"samples": vae.encode(pixels[:, :, :, :3])},)
        return ({"samples": fn(pixels[:, :, :, :3], tile_size, overlap)},)


def read_config(path) -> tuple[str, int | None]:
    """(prediction, CLIP layer or None) from an LDM inference config (ComfyUI's models/configs/*.yaml)."""
    try:
        import yaml
    except ImportError as e:
        raise ImportError("reading a checkpoint config needs PyYAML: pip install 'twosamplers[workflow]'") from e
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        params = data["model"]["params"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ValueError(f"{path.name} is not an LDM inference config (model.params): {e}") from None
    prediction = "v" if params.get("parameterization") == "v" else "eps"
    clip = (params.get("cond_stage_config") or {}).get("params") or {}
    layer = clip.get("layer_idx")
    return prediction, int(layer) if isinstance(layer, int) and layer < 0 else None


class CheckpointLoader(FolderNode):
    """config_name + ckpt_name -> (MODEL, CLIP, VAE): the checkpoint with the config's prediction type and
    CLIP layer (ComfyUI's deprecated loader that old workflows use)."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        configs = sorted(set(KNOWN_CONFIGS) | set(folders.list_models("configs", (".yaml",)) if folders else []))
        names = folders.list_models("checkpoints") if folders is not None else []
        return {"required": {"config_name": (configs,), "ckpt_name": (names,)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"
    CATEGORY = "advanced/loaders"
    FILE_INPUTS = ("config_name", "ckpt_name")

    def config(self, config_name) -> tuple[str, int | None]:
        path = self.folders.find_model("configs", config_name)
        if path is not None:
            return read_config(path)
        if config_name in KNOWN_CONFIGS:
            return KNOWN_CONFIGS[config_name]
        where = ", ".join(str(d) for d in self.folders.search_dirs("configs")) or "no configs folder given"
        raise FileNotFoundError(f"config {config_name!r} not found in configs/ (searched: {where}); ComfyUI's own "
                                f"configs are known without a file: {', '.join(sorted(KNOWN_CONFIGS))}")

    def check_inputs(self, config_name, ckpt_name):
        self.config(config_name)
        self.folders.resolve_checkpoint(ckpt_name)

    def load_checkpoint(self, config_name, ckpt_name):
        prediction, layer = self.config(config_name)
        model = self.folders.load_checkpoint(ckpt_name, prediction=prediction)
        return (ModelHandle(model), ClipHandle(model, layer), VaeHandle(model))


__all__ = ["CheckpointLoader", "KNOWN_CONFIGS", "VAEDecodeTiled", "VAEEncodeTiled", "VAELoader", "read_config"]
