"""Training-free pixel-space models over a few vendored CC0 textures (no weights, no download).

- `IdealModel` ("ideal"): the exact posterior mean of a finite image set (Karras et al. 2022, EDM, App. B.3),
  D(x; sigma) = sum_i y_i softmax_i(-|x - y_i|^2 / 2 sigma^2). The set of a class is every circular shift of
  its texture (tiled when the image is larger than the texture), cropped to the image size, so distances and
  the posterior mean are circular correlations, computed by FFT in float64. Exact and deterministic; at small
  sigma it returns a training image: the reference model for tests.
- `TextureModel` ("textures", the default): a patch-based analytic denoiser in the spirit of Kamb & Ganguli
  2024 (the "equivariant local score machine") and Niedoba et al. 2024. At each noise level the noisy image
  is average-pooled by a factor s, every pooled pixel compares its P x P neighbourhood with a bank of
  texture patches (softmax over patch distances, pooled noise std sigma / s, temperature 0.5, Gaussian
  window), and writes the weighted mean of the patches' full-resolution s x s centre blocks. Patches shrink
  with sigma (coarse to fine), so the output is a new composition of local pieces, not a copy of a crop, and
  patches that straddle a mask boundary see both sides, which blends the regions.

Both are class-conditional: a prompt names textures ("grass", "brick"; several words = the union of their
sets), "" or an empty negative prompt is the unconditional set (the union of all classes), so classifier-free
guidance means what it means for SD. The CONDITIONING tensor is (1, 1, K): one weight per class (1 for the
named ones). For a union the posterior over the pooled set is exact: each class's denoiser and log partition
sum are computed once per distinct (x, sigma) in the batch and mixed, p_c = softmax_c(lse_c + log w_c), so
cond and uncond rows of one CFG batch share the work.

Pixel space: latent_format = LatentFormat(1.0, 3 channels, downscale 1), values in [-1, 1];
model_sampling = SD's discrete schedule, so every sampler and scheduler applies unchanged.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..engine.schedules import ModelSamplingDiscrete
from .base import DiffusionModel, LatentFormat

PIXEL_FORMAT = LatentFormat(scale_factor=1.0, channels=3, downscale=1)
STOP_WORDS = frozenset({"a", "an", "and", "or", "the", "of", "with", "texture", "textures"})
_SPLIT = re.compile(r"[\s,;+&|/]+")


# ----------------------------------------------------------------------------------------------- texture data
@dataclass(frozen=True)
class TextureSet:
    """Tinted textures (K, 3, S, S) float32 in [-1, 1], their names and the prompt words that select them."""

    names: tuple[str, ...]
    images: torch.Tensor
    aliases: dict[str, str]

    @property
    def words(self) -> dict[str, int]:
        index = {n: i for i, n in enumerate(self.names)}
        return {**{a: index[n] for a, n in self.aliases.items()}, **index}


def _texture_dir():
    return resources.files("twosamplers").joinpath("data", "textures")


@lru_cache(maxsize=4)
def load_textures(names: tuple[str, ...] | None = None) -> TextureSet:
    """The vendored textures (all of them, or `names` in that order), tinted by the colours in textures.json."""
    folder = _texture_dir()
    manifest = json.loads(folder.joinpath("textures.json").read_text(encoding="utf-8"))
    entries = manifest["textures"]
    size = int(manifest["size"])
    if names is None:
        names = tuple(entries)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise ValueError(f"unknown texture {unknown[0]!r}; known textures: {', '.join(entries)}")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"textures must be distinct and at least one, got {names}")
    images, aliases = [], {}
    for name in names:
        e = entries[name]
        with folder.joinpath(e["file"]).open("rb") as f, Image.open(f) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)
        if grey.shape != (size, size):
            raise ValueError(f"texture {e['file']} is {grey.shape}, expected {size}x{size}")
        lo, hi = np.percentile(grey, [1.0, 99.0]).astype(np.float32)
        g = np.clip((grey - lo) / max(hi - lo, np.float32(1e-3)), 0.0, 1.0)
        dark = np.asarray(e["dark"], dtype=np.float32)[:, None, None]
        light = np.asarray(e["light"], dtype=np.float32)[:, None, None]
        rgb = dark + g[None] * (light - dark)
        images.append(torch.from_numpy((rgb * np.float32(2.0) - np.float32(1.0)).astype(np.float32)))
        for a in e.get("aliases", ()):
            aliases[a] = name
    return TextureSet(tuple(names), torch.stack(images).contiguous(), aliases)


# ------------------------------------------------------------------------------------------------ shared base
class _ClassConditionalModel(DiffusionModel):
    """Prompt handling, the pixel-space protocol and per-row class mixing; subclasses give one class's
    posterior mean and log partition sum via `_class_posterior`, or override `_denoise_group`."""

    def __init__(self, textures: tuple[str, ...] | None = None, device: str | torch.device | None = None) -> None:
        self.textures = load_textures(tuple(textures) if textures is not None else None)
        self.model_sampling = ModelSamplingDiscrete()
        self.latent_format = PIXEL_FORMAT
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._images = self.textures.images.to(self._device)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.textures.names

    def __repr__(self) -> str:
        return f"{type(self).__name__}(textures={list(self.class_names)})"

    # -- prompts
    def prompt_weights(self, text: str) -> torch.Tensor:
        """Class weights (K,) of a prompt: 1 for every named texture (the union), all ones for ""."""
        if not isinstance(text, str):
            raise TypeError(f"prompt must be a str, got {type(text).__name__}")
        words = self.textures.words
        k = len(self.class_names)
        tokens = [t for t in _SPLIT.split(text.strip().lower()) if t and t not in STOP_WORDS]
        if not tokens:
            return torch.ones(k)
        w = torch.zeros(k)
        for t in tokens:
            if t not in words:
                aliases = ", ".join(f"{a}={n}" for a, n in self.textures.aliases.items())
                raise ValueError(f"unknown prompt word {t!r}; known words: {', '.join(self.class_names)}"
                                 f" (aliases: {aliases}); several words mean the union, '' means all")
            w[words[t]] = 1.0
        return w

    def encode_prompt(self, text: str, **options) -> list:
        return [[self.prompt_weights(text).reshape(1, 1, -1), {}]]

    # -- pixels <-> "latents" (identity up to the [0, 1] <-> [-1, 1] range)
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[-1] not in (3, 4):
            raise ValueError("pixels must be a tensor (B, H, W, 3) in [0, 1]")
        return pixels[..., :3].movedim(-1, 1).float() * 2.0 - 1.0

    def decode_latent(self, samples: torch.Tensor) -> torch.Tensor:
        if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 3:
            raise ValueError("samples must be a tensor (B, 3, H, W) in [-1, 1]")
        return ((samples.float() + 1.0) * 0.5).clamp(0.0, 1.0).movedim(1, -1)

    # -- the denoiser
    def _row_weights(self, context: torch.Tensor | None, batch: int) -> torch.Tensor:
        k = len(self.class_names)
        if context is None:
            return torch.ones(batch, k)
        if not isinstance(context, torch.Tensor) or context.ndim != 3 or context.shape[-1] != k:
            shape = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"context must be (B, L, {k}) class weights from this model's encode_prompt, got {shape}")
        w = context.detach().float().cpu().mean(dim=1)
        if w.shape[0] != batch:
            w = w.expand(batch, k) if w.shape[0] == 1 else w
        if w.shape[0] != batch:
            raise ValueError(f"context batch {context.shape[0]} does not match x batch {batch}")
        if torch.isnan(w).any() or (w < 0).any() or (w.sum(dim=1) <= 0).any():
            raise ValueError("class weights in the conditioning must be >= 0 with at least one > 0 per row")
        return w

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None, *,
                    output_mask: torch.Tensor | None = None, **extras):
        """D(x; sigma) per row. `output_mask` (B, 1 or C, H, W), optional: only pixels where it is > 0 are
        used by the caller (the engine passes its noise mask); elsewhere the output is x itself."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be (B, 3, H, W) pixels, got {tuple(x.shape)}")
        b = x.shape[0]
        sigma = torch.as_tensor(sigma).reshape(-1).float().cpu()
        if sigma.numel() == 1:
            sigma = sigma.expand(b)
        weights = self._row_weights(context, b)
        xd = x.detach().to(device=self._device, dtype=torch.float32)
        need = None
        if output_mask is not None:
            if (not isinstance(output_mask, torch.Tensor) or output_mask.ndim != 4
                    or output_mask.shape[0] not in (1, b) or output_mask.shape[-2:] != x.shape[-2:]):
                shape = tuple(output_mask.shape) if isinstance(output_mask, torch.Tensor) else output_mask
                raise ValueError(f"output_mask must be (1 or {b}, C, {x.shape[-2]}, {x.shape[-1]}), got {shape}")
            need = (output_mask.detach().to(self._device) > 0).any(dim=1).expand(b, -1, -1)
        out = torch.empty_like(xd)
        # rows with the same x, sigma and output mask (cond and uncond copies of one CFG batch) share the work
        groups: list[list[int]] = []
        for i in range(b):
            for g in groups:
                j = g[0]
                if (float(sigma[i]) == float(sigma[j]) and torch.equal(xd[i], xd[j])
                        and (need is None or torch.equal(need[i], need[j]))):
                    g.append(i)
                    break
            else:
                groups.append([i])
        for g in groups:
            s = max(float(sigma[g[0]]), 1e-4)
            out[g] = self._denoise_group(xd[g[0]], s, weights[g], None if need is None else need[g[0]])
        return out.to(device=x.device, dtype=x.dtype)

    def _denoise_group(self, x: torch.Tensor, sigma: float, weights: torch.Tensor,
                       need: torch.Tensor | None) -> torch.Tensor:
        """Outputs (R, 3, H, W) for R rows that share x (3, H, W) and sigma, with class weights (R, K): each
        class's posterior is computed once and mixed per row. `need` (H, W) is ignored here (all pixels)."""
        needed = sorted({int(c) for c in torch.nonzero(weights.sum(0)).reshape(-1)})
        state = self._prepare(x, sigma)
        per_class = {c: self._class_posterior(state, c) for c in needed}
        out = torch.empty(weights.shape[0], *x.shape, device=x.device)
        for i in range(weights.shape[0]):
            cs = [c for c in needed if weights[i, c] > 0]
            if len(cs) == 1:
                out[i] = per_class[cs[0]][0]
                continue
            lse = torch.stack([per_class[c][1] + math.log(float(weights[i, c])) for c in cs])
            p = torch.softmax(lse.double(), dim=0).float()
            out[i] = (torch.stack([per_class[c][0] for c in cs]) * p).sum(dim=0)
        return out

    def _prepare(self, x: torch.Tensor, sigma: float):
        """Per-(x, sigma) work shared by all classes."""
        raise NotImplementedError

    def _class_posterior(self, state, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (posterior mean (3, H, W), log partition sum broadcastable to (1, H, W)) for class c."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------------ ideal
class IdealModel(_ClassConditionalModel):
    """The exact posterior-mean denoiser of the set of all circular shifts of each texture (see module doc)."""

    def __init__(self, textures: tuple[str, ...] | None = None, device: str | torch.device | None = None) -> None:
        super().__init__(textures, device)
        self._spectra: dict[tuple[int, int], tuple[int, torch.Tensor, torch.Tensor]] = {}

    def _period(self, h: int, w: int) -> int:
        size = self._images.shape[-1]
        return size * math.ceil(max(h, w) / size)

    def training_image(self, c: int, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
        """Training image (3, h, w) of class c shifted by (dy, dx): the texture tiled, rolled and cropped."""
        t = self._tiled(c, self._period(h, w))
        return torch.roll(t, shifts=(-dy, -dx), dims=(-2, -1))[:, :h, :w].float()

    def _tiled(self, c: int, period: int) -> torch.Tensor:
        t = self._images[c].double()
        reps = period // t.shape[-1]
        return t.repeat(1, reps, reps)

    def _spectrum(self, c: int, h: int, w: int):
        key = (c, h, w)
        if key not in self._spectra:
            n = self._period(h, w)
            t = self._tiled(c, n)
            ft = torch.fft.rfft2(t)
            window = torch.zeros(n, n, dtype=torch.float64, device=t.device)
            window[:h, :w] = 1.0
            # |y_s|^2 for every shift s: correlation of the window with the texture squared
            norms = torch.fft.irfft2(torch.conj(torch.fft.rfft2(window)) * torch.fft.rfft2((t * t).sum(0)), s=(n, n))
            self._spectra[key] = (n, ft, norms)
        return self._spectra[key]

    def _prepare(self, x: torch.Tensor, sigma: float):
        h, w = x.shape[-2:]
        n = self._period(h, w)
        xp = torch.zeros(3, n, n, dtype=torch.float64, device=x.device)
        xp[:, :h, :w] = x.double()
        return {"x_ft": torch.fft.rfft2(xp), "sigma": sigma, "h": h, "w": w}

    def _class_posterior(self, state, c: int):
        h, w, sigma = state["h"], state["w"], state["sigma"]
        n, ft, norms = self._spectrum(c, h, w)
        corr = torch.fft.irfft2(torch.conj(state["x_ft"]) * ft, s=(n, n)).sum(0)
        logits = (2.0 * corr - norms) / (2.0 * sigma * sigma)
        m = logits.max()
        p = (logits - m).clamp_(min=EXP_FLOOR).exp_()
        z = p.sum()
        p /= z
        mean = torch.fft.irfft2(torch.conj(torch.fft.rfft2(p))[None] * ft, s=(n, n))[:, :h, :w]
        lse = (torch.log(z) + m).reshape(1, 1, 1)
        return mean.float(), lse.float()


# --------------------------------------------------------------------------------------------------- textures
@dataclass(frozen=True)
class PatchLevel:
    """Noise levels sigma >= `sigma_min` use pooling factor `pool`, patch side `patch`, `bank` patches/class."""

    sigma_min: float
    pool: int
    patch: int
    bank: int


DEFAULT_LEVELS = (
    PatchLevel(4.0, 8, 7, 4096),
    PatchLevel(1.5, 4, 9, 4096),
    PatchLevel(0.5, 2, 9, 1024),
    PatchLevel(0.15, 1, 5, 1024),
    PatchLevel(0.0, 1, 3, 1024),
)
CHUNK = 512  # query pixels per matmul; fixed, so results are bit-identical run to run on one machine
EXP_FLOOR = -60.0  # exp() of anything lower is < 1e-26 of the row max; clamping avoids slow denormals
MIN_ROWS = 16  # matmuls of fewer rows may round differently; selections are padded to this many
# Pruning a union's classes (see TextureModel._denoise_group): every PROXY_STRIDE-th bank patch estimates a
# class's log partition sum; a class whose estimate is more than min(PRUNE_MARGIN, PRUNE_MARGIN_MIN +
# PRUNE_DIST * softmax scale) nats below the row's best exactly computed class is left out. The estimate can
# only miss patches, i.e. it underestimates; at large sigma by a few nats, at small sigma by hundreds.
PROXY_STRIDE = 32
PRUNE_MARGIN = 60.0
PRUNE_MARGIN_MIN = 30.0
PRUNE_DIST = 4.0


class TextureModel(_ClassConditionalModel):
    """Patch-based analytic denoiser over the vendored textures (see module doc).

    `temperature` scales the noise std in the softmax (0.5 keeps contrast; 1 is the plain posterior and
    washes out); `levels` the coarse-to-fine schedule; `seed` picks the bank patches.
    """

    accepts_output_mask = True  # apply_model(..., output_mask=m) skips the pixels where m == 0

    def __init__(self, textures: tuple[str, ...] | None = None, device: str | torch.device | None = None, *,
                 temperature: float = 0.5, levels: tuple[PatchLevel, ...] = DEFAULT_LEVELS, seed: int = 0) -> None:
        super().__init__(textures, device)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        levels = tuple(sorted(levels, key=lambda lv: -lv.sigma_min))
        if not levels or levels[-1].sigma_min > 0:
            raise ValueError("levels must cover sigma down to 0 (the last sigma_min must be 0)")
        for lv in levels:
            if lv.pool < 1 or lv.patch < 1 or lv.patch % 2 == 0 or lv.bank < 1:
                raise ValueError(f"bad level {lv}: pool >= 1, odd patch >= 1, bank >= 1")
        self.temperature = float(temperature)
        self.levels = levels
        self.seed = int(seed)
        self.pad_multiple = max(lv.pool for lv in levels)
        self._banks: dict[tuple[int, int], _Bank] = {}
        self._proxies: dict[tuple[tuple[int, ...], int], tuple[torch.Tensor, torch.Tensor, list[float]]] = {}
        self._windows: dict[int, torch.Tensor] = {}

    def level(self, sigma: float) -> PatchLevel:
        for lv in self.levels:
            if sigma >= lv.sigma_min:
                return lv
        return self.levels[-1]

    def _window(self, lv: PatchLevel) -> torch.Tensor:
        """sqrt of a Gaussian window (std patch/2) over a patch, flattened like unfold's (3, P, P) columns."""
        key = lv.patch
        if key not in self._windows:
            r = torch.arange(lv.patch, dtype=torch.float32) - (lv.patch - 1) / 2
            g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (lv.patch / 2) ** 2))
            self._windows[key] = g.sqrt().reshape(1, -1).repeat(3, 1).reshape(-1).to(self._device)
        return self._windows[key]

    def _bank(self, c: int, li: int) -> _Bank:
        """Class c's patch bank at level li, built once."""
        key = (c, li)
        if key not in self._banks:
            lv = self.levels[li]
            s, p = lv.pool, lv.patch
            tex = self._images[c][None]  # (1, 3, S, S)
            pooled = F.avg_pool2d(tex, s, stride=1) if s > 1 else tex  # every pooling phase
            span = (p - 1) * s + 1
            ny, nx = pooled.shape[-2] - span + 1, pooled.shape[-1] - span + 1
            gen = torch.Generator().manual_seed(self.seed * 1000003 + c * 101 + li)
            count = min(lv.bank, ny * nx)
            pos = torch.randperm(ny * nx, generator=gen)[:count].sort().values.to(self._device)
            py, px = pos // nx, pos % nx
            off = torch.arange(p, device=self._device) * s
            yy = (py[:, None] + off[None, :])[:, :, None]  # (N, P, 1)
            xx = (px[:, None] + off[None, :])[:, None, :]  # (N, 1, P)
            patches = pooled[0][:, yy, xx]  # (3, N, P, P)
            patches = patches.permute(1, 0, 2, 3).reshape(count, -1) * self._window(lv)
            cy, cx = py + (p // 2) * s, px + (p // 2) * s  # top-left of the centre pooling window
            by = (cy[:, None] + torch.arange(s, device=self._device))[:, :, None]
            bx = (cx[:, None] + torch.arange(s, device=self._device))[:, None, :]
            centres = tex[0][:, by, bx].permute(1, 0, 2, 3).reshape(count, -1)  # (N, 3 s s)
            centres = torch.cat([centres, torch.ones(count, 1, device=self._device)], dim=1)
            neg_norm = -(patches * patches).sum(1, keepdim=True).t().contiguous()
            wt = patches.t().contiguous()
            # positions are sorted, so every PROXY_STRIDE-th patch is a sample spread over the texture
            self._banks[key] = _Bank(wt, neg_norm, centres.contiguous(), wt[:, ::PROXY_STRIDE].contiguous(),
                                     neg_norm[:, ::PROXY_STRIDE].contiguous())
        return self._banks[key]

    def _prepare(self, x: torch.Tensor, sigma: float):
        li = self.levels.index(self.level(sigma))
        lv = self.levels[li]
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        xp = F.pad(x[None], (0, pw, 0, ph), mode="replicate") if ph or pw else x[None]
        s, p = lv.pool, lv.patch
        pooled = F.avg_pool2d(xp, s) if s > 1 else xp
        r = p // 2
        hh, ww = pooled.shape[-2:]
        mode = "reflect" if r < hh and r < ww else "replicate"
        padded = F.pad(pooled, (r, r, r, r), mode=mode) if r else pooled
        queries = F.unfold(padded, p)[0].t() * self._window(lv)  # (hh*ww, 3 P^2)
        scale = 1.0 / (2.0 * (self.temperature * sigma / s) ** 2)
        return {"q": queries.contiguous(), "li": li, "scale": scale, "h": h, "w": w, "hh": hh, "ww": ww}

    def _denoise_group(self, x: torch.Tensor, sigma: float, weights: torch.Tensor,
                       need: torch.Tensor | None) -> torch.Tensor:
        """Rows that share x and sigma. Work happens per query row (pooled pixel): only rows whose s x s block
        has a needed pixel, and for a row whose prompt is a union of classes (the unconditional "" is all of
        them) only the classes that can matter there. Classes of single-class rows (the cond row of a CFG
        batch) are computed exactly everywhere; the others are estimated from a subset of their bank, and
        computed exactly only where the estimate comes within the pruning margin of the best exact class
        (where no class of the row is known yet, the best estimate's class is computed first). A pruned
        class's weight is below e^-30 unless the estimate missed its best patches by more than the margin,
        which happens at small sigma where two classes compete (about 0.1% of pixels per call in the demo;
        the pictures' statistics stay the same: tests/test_default_models.py). Each class's value at a row
        does not depend on which other rows share its matmul (>= MIN_ROWS rows; fewer are padded)."""
        state = self._prepare(x, sigma)
        rows = self._query_rows(state, need)
        q = state["q"] if rows is None else state["q"][rows]
        post = _ClassPosteriors(self, q, state)
        sets = [[int(c) for c in torch.nonzero(w).reshape(-1)] for w in weights]
        logw = weights.double().clamp(min=1e-300).log()
        use: dict[tuple[int, int], torch.Tensor | None] = {}  # (row, class) -> query rows where the class counts
        for i, cs in enumerate(sets):
            if len(cs) == 1:
                post.compute(cs[0], None)
                use[(i, cs[0])] = None
        multi = [i for i, cs in enumerate(sets) if len(cs) > 1]
        if multi:
            use.update(self._prune_unions(post, [sets[i] for i in multi], logw[multi], multi, state))
        out = x.expand(len(sets), -1, -1, -1).clone()  # pixels no caller uses keep x
        for i, cs in enumerate(sets):
            if len(cs) == 1:
                blocks = post.blocks(cs[0])
            else:
                logits = torch.stack([torch.where(use[(i, c)], post.lse(c) + logw[i, c], -math.inf) for c in cs])
                p = torch.softmax(logits, dim=0).float()
                blocks = torch.zeros_like(post.blocks(cs[0]))
                for k, c in enumerate(cs):  # p is 0 where a class is not used; its blocks are finite (0 if unset)
                    blocks.addcmul_(post.blocks(c), p[k][:, None])
            img = self._stitch(blocks, rows, state)
            out[i] = img if need is None else torch.where(need, img, out[i])
        return out

    def _query_rows(self, state, need: torch.Tensor | None) -> torch.Tensor | None:
        """Indices of the query rows (pooled pixels) whose s x s block holds a needed pixel; None for all."""
        if need is None:
            return None
        s = self.levels[state["li"]].pool
        hh, ww, h, w = state["hh"], state["ww"], state["h"], state["w"]
        nm = F.pad(need[None, None].float(), (0, ww * s - w, 0, hh * s - h))
        nm = F.max_pool2d(nm, s) if s > 1 else nm
        return torch.nonzero(nm.reshape(-1) > 0).reshape(-1)

    def _stitch(self, blocks: torch.Tensor, rows: torch.Tensor | None, state) -> torch.Tensor:
        """Centre blocks (M, 3 s^2) of the computed query rows -> image (3, H, W) (pixel shuffle)."""
        s = self.levels[state["li"]].pool
        hh, ww, h, w = state["hh"], state["ww"], state["h"], state["w"]
        if rows is not None:
            full = blocks.new_zeros(hh * ww, blocks.shape[1])
            full[rows] = blocks
            blocks = full
        return blocks.reshape(hh, ww, 3, s, s).permute(2, 0, 3, 1, 4).reshape(3, hh * s, ww * s)[:, :h, :w]

    def _prune_unions(self, post: _ClassPosteriors, sets: list[list[int]], logw: torch.Tensor, ids: list[int],
                      state) -> dict[tuple[int, int], torch.Tensor]:
        """For rows whose prompt is a union of classes: compute each class exactly where it can matter."""
        union = sorted({c for cs in sets for c in cs})
        margin = min(PRUNE_MARGIN, PRUNE_MARGIN_MIN + PRUNE_DIST * state["scale"])
        exact = [c for c in union if post.complete(c)]  # e.g. the cond class of a CFG batch
        est = {c: post.lse(c) for c in exact}
        rest = [c for c in union if c not in exact]
        if rest:
            est.update(self._proxy_lse(post.q, rest, state["li"], state["scale"]))
        for cs, lw in zip(sets, logw, strict=True):  # where none of a row's classes is known: the best estimate's
            known = post.known(cs)
            anchor = torch.stack([est[c] + lw[c] for c in cs]).argmax(0)
            for k, c in enumerate(cs):
                post.compute(c, (anchor == k) & ~known)
        use = {}
        for i, cs, lw in zip(ids, sets, logw, strict=True):
            # the best exact value among the row's classes computed so far (its anchor, the cond class, ...)
            ref = torch.stack([torch.where(post.done(c), post.lse(c) + lw[c], -math.inf) for c in cs]).max(0).values
            for c in cs:
                value = torch.where(post.done(c), post.lse(c), est[c])  # exact where already computed
                want = value + lw[c] >= ref - margin
                post.compute(c, want)
                use[(i, c)] = want
        return use

    def _posterior_rows(self, q: torch.Tensor, bank: _Bank, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(posterior-mean centre blocks (M, 3 s^2), log partition sums (M,)) of query rows q (M, 3 P^2)."""
        m_rows, n = q.shape[0], bank.wt.shape[1]
        q = _pad_rows(q)
        buf = torch.empty(min(CHUNK, q.shape[0]), n, device=self._device)
        blocks = torch.empty(q.shape[0], bank.centres.shape[1] - 1, device=self._device)
        lse = torch.empty(q.shape[0], device=self._device)
        for start in range(0, q.shape[0], CHUNK):
            stop = min(start + CHUNK, q.shape[0])
            b = buf[: stop - start]
            # logits = (2<u,w> - |w|^2) * scale: |u|^2 is the same for every patch and cancels in the softmax
            torch.addmm(bank.neg_norm, q[start:stop], bank.wt, beta=scale, alpha=2.0 * scale, out=b)
            mx = b.max(dim=1, keepdim=True).values
            b.sub_(mx).clamp_(min=EXP_FLOOR).exp_()
            r = b @ bank.centres
            den = r[:, -1:]
            torch.div(r[:, :-1], den, out=blocks[start:stop])
            torch.add(torch.log(den[:, 0]), mx[:, 0], out=lse[start:stop])
        return blocks[:m_rows], lse[:m_rows]

    def _proxy_lse(self, q: torch.Tensor, classes: list[int], li: int, scale: float) -> dict[int, torch.Tensor]:
        """Estimates (M,) float64 of the classes' log partition sums from every PROXY_STRIDE-th bank patch,
        all classes in one matmul."""
        key = (tuple(classes), li)
        if key not in self._proxies:
            banks = [self._bank(c, li) for c in classes]
            self._proxies[key] = (torch.cat([b.proxy_wt for b in banks], dim=1).contiguous(),
                                  torch.cat([b.proxy_neg_norm for b in banks], dim=1).contiguous(),
                                  [math.log(b.wt.shape[1] / b.proxy_wt.shape[1]) for b in banks])
        wt, neg_norm, log_ratio = self._proxies[key]
        k = len(classes)
        m_rows = q.shape[0]
        q = _pad_rows(q)
        out = torch.empty(q.shape[0], k)
        for start in range(0, q.shape[0], CHUNK):
            stop = min(start + CHUNK, q.shape[0])
            b = torch.addmm(neg_norm, q[start:stop], wt, beta=scale, alpha=2.0 * scale).view(stop - start, k, -1)
            mx = b.max(dim=2, keepdim=True).values
            b.sub_(mx).clamp_(min=EXP_FLOOR).exp_()  # not logsumexp: exp of very negative inputs is slow
            torch.add(b.sum(dim=2).log_(), mx[..., 0], out=out[start:stop])
        out = out[:m_rows].double()
        return {c: out[:, j] + log_ratio[j] for j, c in enumerate(classes)}


@dataclass(frozen=True)
class _Bank:
    """One class's patches at one level: windowed patches (3P^2, N), -|patch|^2 (1, N), centre blocks with a
    ones column (N, 3 s^2 + 1), and every PROXY_STRIDE-th patch for the pruning estimate."""

    wt: torch.Tensor
    neg_norm: torch.Tensor
    centres: torch.Tensor
    proxy_wt: torch.Tensor
    proxy_neg_norm: torch.Tensor


class _ClassPosteriors:
    """Exact posterior centre blocks and log partition sums per class, filled in row by row on demand."""

    def __init__(self, model: TextureModel, q: torch.Tensor, state) -> None:
        self.model, self.q, self.state = model, q, state
        self._data: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _entry(self, c: int):
        if c not in self._data:
            m, s = self.q.shape[0], self.model.levels[self.state["li"]].pool
            self._data[c] = (torch.zeros(m, 3 * s * s), torch.zeros(m), torch.zeros(m, dtype=torch.bool))
        return self._data[c]

    def blocks(self, c: int) -> torch.Tensor:
        return self._entry(c)[0]

    def lse(self, c: int) -> torch.Tensor:
        """float64 (M,), valid where done(c)."""
        return self._entry(c)[1].double()

    def done(self, c: int) -> torch.Tensor:
        return self._entry(c)[2]

    def complete(self, c: int) -> bool:
        return c in self._data and bool(self._data[c][2].all())

    def known(self, classes: list[int]) -> torch.Tensor:
        out = torch.zeros(self.q.shape[0], dtype=torch.bool)
        for c in classes:
            out |= self.done(c)
        return out

    def compute(self, c: int, want: torch.Tensor | None) -> None:
        """Compute class c at the wanted rows (None: all) that are not done yet."""
        blocks, lse, done = self._entry(c)
        todo = ~done if want is None else want & ~done
        idx = torch.nonzero(todo).reshape(-1)
        if idx.numel() == 0:
            return
        every = idx.numel() == self.q.shape[0]
        b, l_ = self.model._posterior_rows(self.q if every else self.q[idx], self.model._bank(c, self.state["li"]),
                                           self.state["scale"])
        if every:
            blocks.copy_(b)
            lse.copy_(l_)
        else:
            blocks[idx] = b
            lse[idx] = l_
        done |= todo


def _pad_rows(q: torch.Tensor) -> torch.Tensor:
    """q with zero rows appended up to MIN_ROWS: BLAS takes other code paths (other rounding) for fewer rows,
    and a row's result must not depend on how many rows share its matmul."""
    if q.shape[0] >= MIN_ROWS:
        return q
    return torch.cat([q, q.new_zeros(MIN_ROWS - q.shape[0], q.shape[1])])
