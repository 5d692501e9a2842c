"""T2I-Adapters (TencentARC) for SD1.x / SD2.x / SDXL, loaded from the files ComfyUI keeps under
models/controlnet/ and applied through the ControlNet machinery (`control.py`).

An adapter is a small convolutional encoder of the hint image: the image is pixel-unshuffled (8x8 blocks for SD1.x
adapters, 16x16 for SDXL ones), then four levels of residual blocks each give one feature map, which is *added* to
the UNet's hidden state inside its encoder (not to the skip connections, as a ControlNet's residuals are):

- SD1.x / SD2.x: level i's feature is added at the end of down block i (after its last ResNet + attention, before
  its downsampler), so the skip connection of that layer carries it too.
- SDXL: level 0's after down block 0's downsampler, levels 1 and 2 at the end of down blocks 1 and 2, level 3 to
  the middle block's output.

The network does not see the noisy latent or the timestep: it runs once per hint (the features are cached by
`ControlApply`), and each step only scales them by the strength.

Layouts read (what ComfyUI 0.30's ControlNetLoader accepts, detected by the same keys):
- TencentARC's full adapter (`conv_in`, `body.N.block1/block2`, optional `body.N.in_conv`, `body.N.down_opt.op`
  for strided-conv downsampling; kernel size 1 or 3 read off `body.0.block2`); SDXL when conv_in takes 256 or 768
  channels (1 or 3 hint channels x 16 x 16); the hint's channel count is conv_in's inputs / 64 (or / 256).
- its diffusers conversion in one file (`adapter.conv_in`, `adapter.body.I.resnets.J.*`), renamed to the above;
- TencentARC's light adapter (`body.0.in_conv`, `body.I.body.J.*`, `body.I.out_conv`; SD1.x widths 320..1280);
- a pickle holding {"adapter": state dict} (the inner dict is used).
A diffusers light adapter (`adapter.body.0.resnets.0.*` *and* `adapter.body.0.in_conv`) is refused: ComfyUI 0.30
renames it wrongly and cannot load it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .sd_loading import CheckpointError, UnsupportedModelError

LIGHT_CHANNELS = (320, 640, 1280, 1280)
LIGHT_BLOCKS = 4
FULL_BLOCKS = 2
XL_INPUT_WIDTHS = (256, 768)  # conv_in inputs of SDXL adapters: 1 or 3 channels x 16 x 16


def is_t2i_adapter_state(sd: dict) -> bool:
    """Whether a state dict (after `control_model.` stripping or not) is a T2I-Adapter ComfyUI would load."""
    return ("adapter.body.0.resnets.0.block1.weight" in sd or "body.0.in_conv.weight" in sd
            or "conv_in.weight" in sd and "body.0.block2.weight" in sd)


# ------------------------------------------------------------------------------------------------- modules
class Downsample(nn.Module):
    """Halve the resolution: a stride-2 3x3 conv (`op`), or a 2x2 average pool that pads an odd side by one zero
    on both ends and counts it in the mean (TencentARC's rule, which ComfyUI keeps)."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_conv:
            return self.op(x)
        return F.avg_pool2d(x, 2, 2, padding=(x.shape[2] % 2, x.shape[3] % 2))


class FullBlock(nn.Module):
    """One residual block of the full adapter: optional downsampling, a conv to the new width when it changes,
    then x + block2(relu(block1(x)))."""

    def __init__(self, c_in: int, c_out: int, down: bool, ksize: int, use_conv: bool) -> None:
        super().__init__()
        self.down_opt = Downsample(c_in, use_conv) if down else None
        self.in_conv = nn.Conv2d(c_in, c_out, ksize, 1, ksize // 2) if c_in != c_out else None
        self.block1 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.block2 = nn.Conv2d(c_out, c_out, ksize, 1, ksize // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return self.block2(F.relu(self.block1(x))) + x


class FullAdapter(nn.Module):
    """TencentARC's full adapter: widths (c, 2c, 4c, 4c), two blocks per level. SD1.x: unshuffle 8, levels 1-3
    downsample. SDXL: unshuffle 16, only level 2 downsamples (level 1 widens in place)."""

    def __init__(self, cin: int, channel: int, ksize: int, use_conv: bool, xl: bool) -> None:
        super().__init__()
        self.xl = xl
        self.unshuffle = 16 if xl else 8
        self.channels = (channel, channel * 2, channel * 4, channel * 4)
        downs = (2,) if xl else (1, 2, 3)
        self.conv_in = nn.Conv2d(cin, channel, 3, 1, 1)
        blocks = []
        for i, c in enumerate(self.channels):
            for j in range(FULL_BLOCKS):
                c_in = self.channels[i - 1] if i > 0 and j == 0 else c
                blocks.append(FullBlock(c_in, c, down=j == 0 and i in downs, ksize=ksize, use_conv=use_conv))
        self.body = nn.ModuleList(blocks)

    def forward(self, hint: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv_in(F.pixel_unshuffle(hint, self.unshuffle))
        features = []
        for i in range(len(self.channels)):
            for j in range(FULL_BLOCKS):
                x = self.body[i * FULL_BLOCKS + j](x)
            features.append(x)
        return features


class LightBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(c, c, 3, 1, 1)
        self.block2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(F.relu(self.block1(x))) + x


class LightLevel(nn.Module):
    """A light adapter level: (average-pool down), 1x1 conv to a quarter width, 4 residual blocks, 1x1 conv out."""

    def __init__(self, c_in: int, c_out: int, down: bool) -> None:
        super().__init__()
        inner = c_out // 4
        self.down = down
        self.in_conv = nn.Conv2d(c_in, inner, 1)
        self.body = nn.Sequential(*[LightBlock(inner) for _ in range(LIGHT_BLOCKS)])
        self.out_conv = nn.Conv2d(inner, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2, 2, padding=(x.shape[2] % 2, x.shape[3] % 2))
        return self.out_conv(self.body(self.in_conv(x)))


class LightAdapter(nn.Module):
    """TencentARC's light adapter (SD1.x only; widths 320, 640, 1280, 1280; unshuffle 8)."""

    xl = False
    unshuffle = 8

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.channels = LIGHT_CHANNELS
        self.body = nn.ModuleList(LightLevel(cin if i == 0 else LIGHT_CHANNELS[i - 1], c, down=i > 0)
                                  for i, c in enumerate(LIGHT_CHANNELS))

    def forward(self, hint: torch.Tensor) -> list[torch.Tensor]:
        x = F.pixel_unshuffle(hint, self.unshuffle)
        features = []
        for level in self.body:
            x = level(x)
            features.append(x)
        return features


# ------------------------------------------------------------------------------------------------- loading
def adapter_state(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The adapter's keys in TencentARC's layout (diffusers' one-file conversion renamed)."""
    if "adapter.body.0.resnets.0.block1.weight" not in sd:
        return sd
    if "adapter.body.0.in_conv.weight" in sd or "adapter.body.0.out_conv.weight" in sd:
        raise UnsupportedModelError(f"{source}: a light T2I-Adapter in diffusers' layout, which ComfyUI 0.30 does not "
                                    "load either; use TencentARC's file (keys body.0.in_conv, body.0.body.0.*)")
    out = {}
    for k, v in sd.items():
        if not k.startswith("adapter."):
            out[k] = v
            continue
        parts = k.split(".")
        if parts[1] == "body" and len(parts) > 4 and parts[3] == "resnets":  # body.I.resnets.J.x -> body.(2I+J).x
            k = ".".join(["body", str(int(parts[2]) * FULL_BLOCKS + int(parts[4])), *parts[5:]])
        elif parts[1] == "body":  # body.I.in_conv -> body.(2I).in_conv
            k = ".".join(["body", str(int(parts[2]) * FULL_BLOCKS), *parts[3:]])
        else:
            k = ".".join(parts[1:])
        out[k] = v
    return out


def build_adapter(sd: dict[str, torch.Tensor], source: str) -> tuple[nn.Module, int]:
    """(network, hint channels) for a TencentARC-layout state dict; the weights are loaded (every key must fit).
    The network is laid out without memory first, so a file's shapes cannot make it allocate more than it holds."""
    with torch.device("meta"):
        if "body.0.in_conv.weight" in sd:
            cin = int(sd["body.0.in_conv.weight"].shape[1])
            net: nn.Module = LightAdapter(cin)
        elif "conv_in.weight" in sd and "body.0.block2.weight" in sd:
            cin, channel = int(sd["conv_in.weight"].shape[1]), int(sd["conv_in.weight"].shape[0])
            ksize = int(sd["body.0.block2.weight"].shape[-1])
            if ksize % 2 == 0 or sd["conv_in.weight"].ndim != 4:
                raise CheckpointError(f"{source}: a T2I-Adapter with {ksize}-wide kernels (odd widths only)")
            use_conv = any(k.endswith("down_opt.op.weight") for k in sd)
            net = FullAdapter(cin, channel, ksize, use_conv, xl=cin in XL_INPUT_WIDTHS)
        else:
            raise UnsupportedModelError(f"{source}: not a T2I-Adapter (no conv_in / body.0.in_conv weights)")
    if cin % (net.unshuffle ** 2):
        raise UnsupportedModelError(f"{source}: a T2I-Adapter whose first conv takes {cin} channels, not a multiple "
                                    f"of {net.unshuffle ** 2} (hint channels x {net.unshuffle}x{net.unshuffle})")
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        what = "; ".join(f"{name}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                         for name, keys in (("missing", missing), ("unexpected", unexpected),
                                            ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"{source}: a T2I-Adapter whose weights do not fit its layout ({what})")
    net = net.to_empty(device="cpu")
    with torch.no_grad():
        for k, p in net.state_dict().items():
            p.copy_(sd[k].to(p.dtype))
    return net.eval().requires_grad_(False), cin // (net.unshuffle ** 2)


class T2IAdapterHandle:
    """A loaded T2I-Adapter: the network, its hint channels and pixel unshuffle, and where its features go.

    `features(hint)` runs it on a (B, C, H, W) hint already at the sampling size (see `hint_size`); the UNet adds
    them (`sd.UNetAdapter`). ControlNetApply / ControlNetApplyAdvanced attach it as any ControlNet."""

    is_t2i_adapter = True

    def __init__(self, network: nn.Module, channels_in: int, source: str) -> None:
        self.network = network
        self.channels_in = channels_in
        self.source = source
        self.xl = bool(network.xl)
        self.unshuffle = int(network.unshuffle)
        self.channels = tuple(int(c) for c in network.channels)
        self.kind = "light" if isinstance(network, LightAdapter) else "full"
        self._copies: dict[tuple, nn.Module] = {}

    def __repr__(self) -> str:
        return f"T2IAdapter({self.family_title}, {self.kind}, {self.channels_in}-channel hint, source={self.source!r})"

    @property
    def family_title(self) -> str:
        return "SDXL T2I-Adapter" if self.xl else "SD1.x T2I-Adapter"

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def hint_size(self, height: int, width: int) -> tuple[int, int]:
        """The hint's pixel size for a latent of (height, width) x 8 pixels: rounded up to the unshuffle block."""
        r = self.unshuffle
        return -(-height // r) * r, -(-width // r) * r

    def prepare_hint(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 at the hint size -> the adapter's input channels (grey = the channels' mean)."""
        if self.channels_in == 1 and image.shape[1] > 1:
            return torch.mean(image, 1, keepdim=True)
        if image.shape[1] != self.channels_in:
            raise ValueError(f"T2I-Adapter {self.source} takes a {self.channels_in}-channel hint, the image has "
                             f"{image.shape[1]} channels")
        return image

    def features(self, hint: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
        """The four level features of `hint`, run on its device in `dtype` (float32 when sampling, the sampled
        latent's dtype, in which ComfyUI runs it); the loaded weights are kept, a moved / converted copy is
        cached."""
        key = (str(hint.device), dtype)
        net = self._copies.get(key)
        if net is None:
            net = self.network
            if self.device != hint.device or self.dtype != dtype:
                net = copy.deepcopy(net).to(device=hint.device, dtype=dtype)
            self._copies[key] = net
        with torch.no_grad():
            return net(hint.to(dtype))

    def placements(self, unet) -> tuple[int, bool]:
        """(how many down blocks take a feature, whether the middle block takes the last) for `unet`; refuses a
        UNet of the other family or whose block widths differ from the adapter's levels. Level i goes to down
        block i: the places ComfyUI's input-block order gives on every real SD1.x / SD2.x / SDXL UNet (two
        layers per block); a smaller UNet (tests) takes the levels it has blocks for."""
        cfg = unet.config
        sdxl = cfg.addition_embed_type == "text_time"
        widths = [int(c) for c in cfg.block_out_channels]
        n = min(3 if self.xl else 4, len(widths))
        ok = sdxl == self.xl and widths[:n] == list(self.channels[:n])
        if self.xl and ok:  # level 0 goes after block 0's downsampler: a block without attention
            ok = len(widths) > 1 and "CrossAttn" not in cfg.down_block_types[0]
        if not ok:
            title = "SDXL" if sdxl else "SD1.x / SD2.x"
            raise UnsupportedModelError(f"{self.family_title} {Path(self.source).name} (level widths "
                                        f"{list(self.channels)}) does not fit this {title} model (UNet block "
                                        f"widths {widths})")
        return n, self.xl and len(widths) == 3 and widths[-1] == self.channels[3]


def t2i_adapter_from_state(sd: dict[str, torch.Tensor], source: str, device=None,
                           dtype: torch.dtype | None = None) -> T2IAdapterHandle:
    """A T2IAdapterHandle from a state dict read from `source` (named in errors), on `device`. The weights stay
    float32 whatever `dtype` (the model's) is: the adapter runs in float32, as ComfyUI runs it."""
    if isinstance(sd.get("adapter"), dict):
        sd = sd["adapter"]
    net, channels_in = build_adapter(adapter_state(sd, source), source)
    net = net.to(device=device or "cpu")
    return T2IAdapterHandle(net, channels_in, source)


__all__ = ["FullAdapter", "LightAdapter", "T2IAdapterHandle", "adapter_state", "build_adapter",
           "is_t2i_adapter_state", "t2i_adapter_from_state"]
