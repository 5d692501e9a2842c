"""Old name of `twosamplers.noise_mask`, kept because the parity checker the README runs imports
`twosamplers.masks.prepare_mask`. New code imports `noise_mask` (ComfyUI's noise-mask resize) or `mask_ops`
(region-mask operations)."""

from .noise_mask import prepare_mask, repeat_to_batch_size

__all__ = ["prepare_mask", "repeat_to_batch_size"]
