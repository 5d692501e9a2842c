"""The `twosamplers` command line: `generate` (one sampler outside a mask, another inside), `demo`, `batch`
and `run` (ComfyUI workflows).

Bad input (missing or unreadable file, mask of another aspect ratio, unknown model or prompt word, sizes
that the model cannot take, ...) prints one line on stderr and exits with status 2 before anything is
written. Outputs are written atomically after sampling, so an existing file is only ever replaced whole and
Ctrl-C (exit status 130) leaves no partial file. Every setting, the seeds and the mask go into the PNG's
text chunks; `twosamplers generate --from out.png` renders the same picture again (other flags override).

This module is parsing and presentation only: flags become a `twosamplers.job.Job` (over the `--from` PNG's
job), `job.run_job` validates, renders and writes; defaults, limits and choice lists come from the job layer,
the engine and the model registry.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_SIZE = 256  # the demo's side
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_FAILED = 1


class BadInput(Exception):
    """An error in what the user gave: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _names():
    from ..engine.schedules import SCHEDULER_NAMES
    from ..samplers import SAMPLER_NAMES
    return SAMPLER_NAMES, SCHEDULER_NAMES


def _add_pass_options(p: argparse.ArgumentParser) -> None:
    samplers, schedulers = _names()
    spec = {
        "seed": dict(type=int, help="noise seed (default 0)"),
        "steps": dict(type=int, help="sampling steps (default 20)"),
        "cfg": dict(type=float, help="classifier-free guidance scale (default: the model's; 1 for textures/ideal, "
                    "8 for checkpoints)"),
        "sampler": dict(choices=samplers, metavar="NAME", help=f"sampler, as in ComfyUI: {', '.join(samplers)} "
                                                                 "(default euler)"),
        "scheduler": dict(choices=schedulers, metavar="NAME", help=f"scheduler: {', '.join(schedulers)} "
                                                                   "(default normal)"),
        "denoise": dict(type=float, help="denoise strength 0..1 (default 1)"),
        "negative": dict(metavar="PROMPT", help="negative prompt (default '': the unconditional set)"),
    }
    g = p.add_argument_group("sampling (a plain flag sets both passes; --base-* / --mask-* set one)")
    for key, kw in spec.items():
        flag = key.replace("_", "-")
        g.add_argument(f"--{flag}", dest=key, default=None, **kw)
    for key, kw in spec.items():
        flag = key.replace("_", "-")
        short = {k: v for k, v in kw.items() if k != "help"}
        g.add_argument(f"--base-{flag}", dest=f"base_{key}", default=None, help=f"{key} of the base pass only",
                       **short)
        g.add_argument(f"--mask-{flag}", dest=f"mask_{key}", default=None, help=f"{key} of the mask pass only",
                       **short)


def _add_memory_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ignore-memory-limit", action="store_true", help="render even when the memory estimate "
                   "exceeds what this machine has available (by default such sizes are refused with the estimate)")


def _add_common_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the settings and output paths as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (they only show on a terminal)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="twosamplers", description="Region-masked diffusion sampling: one sampler outside a "
                     "mask, another inside, with ComfyUI's numbers.")
    parser.add_argument("--version", action="version", version=f"twosamplers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_generate(sub)
    _add_demo(sub)
    _add_batch(sub)
    add_run_parser(sub)
    _add_ui(sub)
    _add_serve(sub)
    return parser


def _add_model_flags(g: argparse.ArgumentParser) -> None:
    g.add_argument("--model", metavar="NAME|PATH", help="textures (default), ideal, or an SD checkpoint path: "
                   "the model of both passes, and the one whose VAE encodes --image and decodes the result")
    g.add_argument("--base-model", metavar="NAME|PATH", help="the model the base pass samples with instead of "
                   "--model (same latent format; --model still encodes and decodes)")
    g.add_argument("--mask-model", metavar="NAME|PATH", help="the model the mask pass samples with instead of "
                   "--model (e.g. an inpainting checkpoint; same latent format; --model still encodes and decodes)")


def _add_generate(sub) -> None:
    from ..engine.front import MODES
    from ..engine.mask_ops import INVERSIONS
    from ..job.imageio import MASK_CHANNELS
    from ..models.analytic import load_textures

    words = ", ".join(load_textures().names)
    g = sub.add_parser("generate", help="render a picture with one prompt outside a mask and another inside",
                       description="Render the base prompt outside the mask and the mask prompt inside it. "
                       f"Prompt words of the built-in models: {words}; several words mean the union of their "
                       "textures; '' means all of them.")
    g.add_argument("--from", dest="from_png", metavar="PNG", help="take every setting (and the mask) from a PNG "
                   "this command wrote; other flags override")
    g.add_argument("--base-prompt", metavar="PROMPT", help="prompt outside the mask (e.g. grass)")
    g.add_argument("--mask-prompt", metavar="PROMPT", help="prompt inside the mask (e.g. brick)")
    g.add_argument("--mask", metavar="PNG", help="mask image: white = the mask prompt's region; any size with "
                   "the output's aspect ratio (resized like ComfyUI)")
    g.add_argument("--mask-channel", choices=MASK_CHANNELS, default=None,
                   help="channel mask files are read from (default gray; alpha inverted as in ComfyUI; auto)")
    g.add_argument("--invert-mask", action=argparse.BooleanOptionalAction, default=None, help="invert the mask")
    g.add_argument("--image", metavar="PNG", help="start from this image (use --denoise < 1 to keep some of it)")
    g.add_argument("--width", type=int, help="output width (default: the image's, else the model's default size)")
    g.add_argument("--height", type=int, help="output height (default: the image's, else from the mask's "
                   "aspect ratio, else the model's default size)")
    _add_model_flags(g)
    m = g.add_argument_group("loading SD checkpoints (--model PATH)")
    m.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    _add_precision_flags(m, "network precision (default: fp16 on cuda, fp32 on cpu)")
    m.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.pt (pickle) checkpoints; they can run "
                   "code when loaded, so only use files you trust")
    m.add_argument("--clip-skip", type=int, help="text encoder layer, as ComfyUI's CLIPSetLastLayer: -1 last, "
                   "-2 penultimate, ... (a positive n means -n, A1111 style)")
    m.add_argument("--prediction", choices=("eps", "v"), help="override the prediction type (SD2.x 768 models are v)")
    _add_lora_options(g)
    g.add_argument("--mode", choices=MODES, default=None,
                   help="two-pass: base, then mask pass (default for one region); interleaved/regional (default for "
                   "several): every sampler step by step; joint: one sampler, region prompts as masked conditioning")
    g.add_argument("--inversion", choices=INVERSIONS, default=None,
                   help="base-pass mask when --no-base-covers-mask: 1 - mask (soft) or mask != 1 (binary)")
    g.add_argument("--base-covers-mask", action=argparse.BooleanOptionalAction, default=None,
                   help="the base pass renders the whole image (default yes)")
    g.add_argument("--grow", type=int, help="grow (or, negative, shrink) the mask by this many pixels")
    g.add_argument("--feather", type=float, help="feather the mask edge (Gaussian sigma, pixels)")
    g.add_argument("--differential", action=argparse.BooleanOptionalAction, default=None,
                   help="grey mask values = per-pixel denoise (Differential Diffusion), two-pass mode")
    g.add_argument("--crop-to-mask", action=argparse.BooleanOptionalAction, default=None,
                   help="sample the mask pass only in the mask's bounding box (two-pass mode)")
    _add_controlnet_options(g)
    g.add_argument("--crop-context", type=int, help="pixels of context around the crop box (latent px, default 8)")
    g.add_argument("--overlap-factor", type=int, help="interleaved/regional: mask overlap (default 10)")
    g.add_argument("--base-only-steps", type=int, help="interleaved/regional: steps before the mask joins "
                   "(default 1)")
    g.add_argument("--comfyui-version", metavar="VERSION", help="reproduce the seeding of this ComfyUI version: "
                   "below 0.30 (e.g. 0.3.64) the ancestral and other default-noise samplers seed their generator with "
                   "the seed, 0.30 and later with seed + 1 (default 0.30)")
    _add_memory_option(g)
    _add_pass_options(g)
    _add_generate_outputs(g)
    g.set_defaults(func=cmd_generate)


def _add_generate_outputs(g) -> None:
    g.add_argument("-o", "--output", metavar="PNG", required=True, help="output PNG (required). An existing file is "
                   "replaced whole; a symbolic link is followed: the file it points to is replaced, the link stays")
    g.add_argument("--save-latent", metavar="FILE", help="also write the result as a ComfyUI .latent file")
    g.add_argument("--preview", metavar="PNG", help="also write a side-by-side preview: mask | base | result")
    _add_common_output(g)


def _add_controlnet_options(g) -> None:
    """--inpaint-conditioning, the ControlNet flags, and the region flags (cli_regions.py)."""
    from .regions import add_region_options

    g.add_argument("--inpaint-conditioning", action=argparse.BooleanOptionalAction, default=None,
                   help="when the mask pass's model is an inpainting checkpoint, give it the base result with the "
                   "mask greyed out, as ComfyUI's InpaintModelConditioning (default yes; no: the latent itself)")
    c = g.add_argument_group("ControlNets (SD checkpoints): FILE:IMAGE[:STRENGTH[:START:END]], repeatable; "
                             "the hint IMAGE is resized to the output like ComfyUI; START/END in 0..1")
    c.add_argument("--controlnet", dest="controlnets", action="append", metavar="SPEC",
                   help="a ControlNet for both passes")
    c.add_argument("--base-controlnet", dest="base_controlnets", action="append", metavar="SPEC",
                   help="a ControlNet for the base pass (after the --controlnet ones)")
    c.add_argument("--mask-controlnet", dest="mask_controlnets", action="append", metavar="SPEC",
                   help="a ControlNet for the mask pass (after the --controlnet ones)")
    add_region_options(g)


def _add_lora_options(g: argparse.ArgumentParser) -> None:
    lo = g.add_argument_group("LoRAs and embeddings (SD checkpoints; also <lora:NAME:S[:S_CLIP]> in a prompt)")
    spec = "FILE[:S[:S_CLIP]]"
    lo.add_argument("--lora", dest="loras", action="append", metavar=spec, default=None,
                    help="a LoRA for both passes at model strength S and text-encoder strength S_CLIP (default 1 and "
                    "S); repeatable, applied in order before each pass's own")
    lo.add_argument("--base-lora", "--base-loras", dest="base_loras", action="append", metavar=spec, default=None,
                    help="a LoRA for the base pass only (repeatable)")
    lo.add_argument("--mask-lora", "--mask-loras", dest="mask_loras", action="append", metavar=spec, default=None,
                    help="a LoRA for the mask pass only (repeatable)")
    lo.add_argument("--lora-dir", metavar="DIR", help="where LoRA names (of the flags and prompt tags) are looked up")
    lo.add_argument("--embeddings", metavar="DIR", help="textual-inversion embeddings for embedding:NAME in prompts")


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="render the built-in demo: grass outside a disc, brick inside",
                       description="Draws a disc mask and renders grass outside, brick inside, with the "
                       "embedded training-free textures model (no GPU, no download). Writes the result and a "
                       "side-by-side preview (mask | base | result).")
    d.add_argument("-o", "--output", metavar="PNG", default="demo.png", help="output PNG (default demo.png)")
    d.add_argument("--preview", metavar="PNG", help="preview PNG (default: OUTPUT with -preview before .png)")
    d.add_argument("--no-preview", action="store_true", help="do not write the preview")
    d.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"width and height (default {DEFAULT_SIZE})")
    d.add_argument("--steps", type=int, default=20, help="steps per pass (default 20)")
    d.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    d.add_argument("--cfg", type=float, default=None, help="guidance scale (default: the model's, 1 for textures)")
    d.add_argument("--sampler", choices=_names()[0], metavar="NAME", default="euler",
                   help=f"sampler: {', '.join(_names()[0])} (default euler)")
    d.add_argument("--base-prompt", default="grass", help="prompt outside the disc (default grass)")
    d.add_argument("--mask-prompt", default="brick", help="prompt inside the disc (default brick)")
    d.add_argument("--model", default="textures", metavar="NAME|PATH", help="model (default textures)")
    d.add_argument("--feather", type=float, default=2.0, help="feather of the disc edge in pixels (default 2)")
    d.add_argument("--save-latent", metavar="FILE", help="also write the result as a ComfyUI .latent file")
    _add_memory_option(d)
    _add_common_output(d)
    d.set_defaults(func=cmd_demo)


def _add_ui(sub) -> None:
    u = sub.add_parser("ui", help="serve the web canvas (needs the [ui] extra: pip install 'twosamplers[ui]')",
                       description="Paint a mask, set the two samplers, watch the render, download the PNG. "
                       "Serves on 127.0.0.1 only unless --host says otherwise; no telemetry, no share link.")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only). "
                   "Any other address listens on the network and requires a credential: --auth, --token, or a "
                   "random token printed at start")
    u.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    u.add_argument("--auth", metavar="USER:PASS", help="require HTTP Basic authentication with this user and "
                   "password (also on 127.0.0.1)")
    u.add_argument("--token", metavar="TOKEN", help="require this token (at least 16 characters): open the page "
                   "as http://HOST:PORT/?token=TOKEN; off loopback without --auth a random one is made and printed")
    u.add_argument("--models", metavar="DIR", help="ComfyUI-style models folder (checkpoints/, loras/, "
                   "controlnet/, embeddings/)")
    u.add_argument("--outputs", metavar="DIR", help="also copy every result here (they are always kept in a "
                   "private temporary folder, which is what the page serves)")
    u.add_argument("--share-none", action="store_true", help="accepted for clarity: a public share link is "
                   "never created")
    u.set_defaults(func=cmd_ui)


def _add_serve(sub) -> None:
    s = sub.add_parser("serve", help="serve ComfyUI's HTTP and websocket API (needs the [server] extra)",
                       description="ComfyUI's server API (POST /prompt, /ws, /view, /history, /object_info, ...) on "
                       "the twosamplers engine, so ComfyUI clients work unchanged; ComfyUI's editor at / when "
                       "comfyui-frontend-package is installed. Binds 127.0.0.1 unless --host says otherwise; any "
                       "other address needs --auth or the printed token. See docs/serve.md.")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8188, help="port (default 8188, ComfyUI's)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--models", metavar="DIR", help="folder with checkpoints/, loras/, ... (ComfyUI's models/)")
    where.add_argument("--comfyui", metavar="DIR", help="a ComfyUI install: its models/, input/ and "
                       "extra_model_paths.yaml")
    s.add_argument("--input-dir", metavar="DIR", help="LoadImage's folder and where uploads go (default: ./input, "
                   "or the ComfyUI install's input/)")
    s.add_argument("--output-dir", metavar="DIR", default="output", help="where outputs are written (default "
                   "./output)")
    s.add_argument("--preview-method", choices=("none", "auto", "latent2rgb"), default="none",
                   help="live previews as binary websocket frames (default none, as ComfyUI: some clients take "
                   "any binary frame for a finished image); auto and latent2rgb both send the page's cheap x0 "
                   "preview (exact for the embedded models, first latent channels for checkpoints)")
    s.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload in MB (default 100)")
    s.add_argument("--auth", metavar="USER:PASS", help="HTTP Basic credentials (required off loopback unless "
                   "--token; else a token is made and printed)")
    s.add_argument("--token", metavar="TOKEN", help="the access token off loopback (default: a random one, printed)")
    s.add_argument("--allowed-host", action="append", metavar="NAME", help="with a credential: host names the "
                   "Host header may carry (default: any)")
    s.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run prompts on Ray actors (one per GPU, else per CPU): join ADDRESS (or $RAY_ADDRESS), "
                   "else start a local Ray (needs the [cluster] extra)")
    s.add_argument("--ray-actors", type=int, metavar="N", help="with --ray: at most N actors")
    s.add_argument("--device", help="device for checkpoints: cpu, cuda, cuda:1, ... (default: cuda if available)")
    s.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="network precision for checkpoints")
    s.set_defaults(func=cmd_serve)


def _add_batch(sub) -> None:
    b = sub.add_parser("batch", help="render every job of a JSON Lines file; safe to stop and restart",
                       description="Each line of JOBS is a JSON object with generate's settings (base_prompt, "
                       "mask_prompt, mask, seed, mask_seed, steps, ...), or a ComfyUI workflow with overrides "
                       "({\"workflow\": \"wf.json\", \"set\": {\"3.seed\": 42}}); a list or "
                       "{\"range\": [start, stop]} value expands the line into one job per value (also inside "
                       "\"set\"). Every line is checked before anything runs. "
                       "Outputs are named by a hash of the job, so a rerun skips finished jobs. "
                       "See docs/scale-out.md for Ray clusters.")
    b.add_argument("jobs", metavar="JOBS", help="JSON Lines jobs file, or - for stdin")
    b.add_argument("-o", "--output-dir", metavar="DIR", default="batch-out", help="output folder (default "
                   "batch-out); holds the PNGs, manifest.jsonl and failures.jsonl")
    b.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per CPU core); "
                   "with --ray the number of actors (default and most: one per GPU, else per CPU)")
    b.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: join ADDRESS (or $RAY_ADDRESS), else start a local one")
    b.add_argument("--retries", type=int, default=0, metavar="K", help="retry a failed job K times (default 0)")
    b.add_argument("--threads", type=int, metavar="T", help="torch threads per worker (default: cores / workers)")
    b.add_argument("--allow-pickle", action="store_true", help="let lines load pickle checkpoints, LoRAs and "
                   "ControlNets (.ckpt/.pt/.bin; weights only); a line cannot allow them on its own")
    for flag, what in (("--models", "models folder (checkpoints/, loras/, ...)"),
                       ("--comfyui", "ComfyUI install (models/, input/, extra_model_paths.yaml)"),
                       ("--input-dir", "input folder (LoadImage's files)")):
        b.add_argument(flag, metavar="DIR", help=f"workflow lines: the {what} for lines that do not give "
                       f"\"{flag[2:].replace('-', '_')}\"")
    _add_common_output(b)
    b.set_defaults(func=cmd_batch)


# ---------------------------------------------------------------------------------------------- flags -> job
def flags_to_dict(args: argparse.Namespace) -> dict:
    """The job fields the user gave on the command line, as typed: `--seed` stays the plain key `seed`, which the
    job layer applies to every pass (job/forms.py: the shorthand), `--base-seed` / `--mask-seed` set one."""
    from ..job import PASS_KEYS, SHARED_KEYS, job_keys

    keys = [*job_keys(), *SHARED_KEYS, *(f"{w}_{k}" for w in ("base", "mask") for k in PASS_KEYS)]
    return {k: getattr(args, k) for k in dict.fromkeys(keys) if getattr(args, k, None) is not None}


_LIST_FLAGS = {"base_controlnets": "--base-controlnet", "mask_controlnets": "--mask-controlnet",
               "controlnets": "--controlnet"}


def _flag_name(key: str) -> str:
    return _LIST_FLAGS.get(key) or "--" + key.replace("_", "-")


def _flag(field: str, origins: dict[str, str] | None = None) -> str:
    """The flag (or other source) the user gave `field` through: `origins` says, else --field."""
    if field.startswith("regions["):
        return _region_origin(field, origins or {})
    field = field.split("[")[0]
    if origins and field in origins:
        return origins[field]
    return _flag_name(field)


def _region_origin(field: str, origins: dict[str, str]) -> str:
    """Where field `regions[i].key...` came from: its --region-KEY N / --mask-KEY / --region flag, else the plain
    flag that set every pass, else the --from PNG, else the --region-KEY N flag that would set it."""
    from .regions import region_flag

    head, _, rest = field.partition(".")
    key = rest.split("[")[0]
    for k in (f"{head}.{key}" if key else head, f"*shared*.{key}"):
        if k in origins:
            return origins[k]
    if "*stored*" in origins:
        return f"{field} (stored in {origins['*stored*']})"
    return region_flag(field)


def flag_origins(args: argparse.Namespace, extra: dict[str, str] | None = None) -> dict[str, str]:
    """field -> the flag the user typed for it (`--steps` when --steps set base_steps), or, for a field that
    came from the --from PNG, where it came from. `extra` adds command-specific names (the region flags')."""
    from ..job import PASS_KEYS, PASSES, SHARED_KEYS, job_keys

    origins = {"output": "-o/--output", "memory": "--width/--height", "from": "--from", "regions": "--region"}
    png = getattr(args, "from_png", None)
    if png:
        origins["*stored*"] = png
    for key in job_keys():
        origins[key] = f"{key} (stored in {png})" if png else _flag_name(key)
    for which in PASSES:
        for key in PASS_KEYS:
            if getattr(args, f"{which}_{key}", None) is not None:
                origins[f"{which}_{key}"] = _flag_name(f"{which}_{key}")
            elif getattr(args, key, None) is not None and key in SHARED_KEYS:
                origins[f"{which}_{key}"] = _flag_name(key)
    for key in PASS_KEYS:
        if getattr(args, f"mask_{key}", None) is not None:  # region 1 of a job written with `regions`
            origins[f"regions[0].{key}"] = _flag_name(f"mask_{key}")
        if getattr(args, key, None) is not None and key in SHARED_KEYS:
            origins[f"*shared*.{key}"] = _flag_name(key)
    for key in job_keys():
        if getattr(args, key, None) is not None:
            origins[key] = _flag_name(key)
    origins.update(extra or {})
    return origins


def make_job(args: argparse.Namespace, extra: dict | None = None, origins: dict[str, str] | None = None):
    """Flags (over the --from PNG's job, when given) -> a validated Job; errors name the flag."""
    from ..job import Job, JobError
    from ..job.forms import merge
    from ..job.trust import given as given_paths
    from .regions import region_fields

    given = {**flags_to_dict(args), **(extra or {})}
    listed, patches, region_origins = region_fields(args, given)
    if origins is not None:
        origins.update({k: v for k, v in region_origins.items() if k not in origins or k.startswith("regions[")})
    if listed is not None:
        given["regions"] = listed
    try:
        if getattr(args, "from_png", None):
            # a PNG someone else made does not choose the files that are read (in any region), nor starts a
            # download (job/trust.py); the paths and models typed here are the user's own
            return Job.from_png(args.from_png, overrides=given, patches=patches, untrusted=None,
                                trusted=given_paths(given, patches))
        return Job.from_dict(merge({}, given, patches)[0])
    except JobError as e:  # the job checks presence too: a missing prompt or mask is its error, with a hint here
        hint = _REQUIRED_HINTS.get(e.field, "") if e.message.startswith("is required") and not args.from_png else ""
        raise BadInput(f"{_flag(e.field, origins)}: {e.message}{hint}") from None


_REQUIRED_HINTS = {"base_prompt": "; or --from a PNG written by twosamplers",
                   "mask_prompt": " (with --mask); or --region MASK PROMPT; or --from a PNG written by twosamplers",
                   "mask": "; or --region MASK PROMPT; or --from a PNG written by twosamplers"}


def check_device(device: str | None) -> None:
    """--device: a torch device this machine has (one clear line otherwise)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise BadInput(f"--device {device!r} is not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"--device {device}: CUDA is not available on this machine (this torch "
                           f"{'has no CUDA support' if torch.version.cuda is None else 'finds no CUDA GPU'}); "
                           "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BadInput(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise BadInput(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise BadInput(f"--device {device}: only cpu, cuda, cuda:N and mps are supported")


def _add_precision_flags(group, dtype_help: str) -> None:
    group.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help=dtype_help)
    group.add_argument("--fp32-text-enc", action="store_true", help="hold the text encoders' weights in fp32 "
                       "(ComfyUI's --fp32-text-enc); by default they are held in fp16 and computed in fp32, as "
                       "ComfyUI does")


def _run(args, job, outputs, origins: dict[str, str] | None = None) -> int:
    from ..job import JobError, run_job

    check_device(getattr(args, "device", None))
    load_options = {k: getattr(args, k, None) for k in ("device", "dtype", "allow_pickle", "fp32_text_enc")}
    try:
        result = run_job(job, outputs=outputs, disable_pbar=True if args.quiet else None, load_options=load_options,
                         inputs={"from": getattr(args, "from_png", None)},
                         check_memory=not getattr(args, "ignore_memory_limit", False))
    except JobError as e:
        raise BadInput(f"{_flag(e.field, origins)}: {e.message}") from None
    info = {"outputs": dict(outputs.items()), "seconds": round(result.seconds, 3)}
    if args.json:
        print(json.dumps({"settings": result.job.to_dict(), **info}, sort_keys=True))
    else:
        outs = ", ".join(info["outputs"].values())
        print(f"wrote {outs} in {info['seconds']:.1f} s", file=sys.stderr if not sys.stdout.isatty() else sys.stdout)
    return 0


def demo_mask(size: int):
    """A disc (radius 0.3 of the side), anti-aliased over about a pixel, quantized to 8 bits."""
    import torch

    r = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    dist = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)
    m = (0.3 * size - dist + 0.5).clamp(0, 1)
    return torch.round(m * 255) / 255


# ---------------------------------------------------------------------------------------------- commands
def cmd_generate(args) -> int:
    from ..job import Outputs

    origins = flag_origins(args)
    job = make_job(args, origins=origins)
    return _run(args, job, Outputs(image=args.output, preview=args.preview, latent=args.save_latent), origins)


def cmd_demo(args) -> int:
    from ..job import Job, JobError, Outputs

    if not 8 <= args.size <= 4096:
        raise BadInput(f"--size {args.size} is out of range (8 .. 4096)")
    preview = None
    if not args.no_preview:
        out = Path(args.output)
        preview = args.preview or str(out.with_name(f"{out.stem}-preview{out.suffix or '.png'}"))
    d = {"base_prompt": args.base_prompt, "mask_prompt": args.mask_prompt, "model": args.model, "width": args.size,
         "height": args.size, "feather": args.feather, "crop_to_mask": True, "mask": "demo-disc"}
    for which in ("base", "mask"):
        d.update({f"{which}_seed": args.seed, f"{which}_steps": args.steps, f"{which}_sampler": args.sampler})
        if args.cfg is not None:
            d[f"{which}_cfg"] = args.cfg
    origins = {"output": "-o/--output", "width": "--size", "height": "--size", "memory": "--size"}
    origins.update({f"{w}_{k}": f"--{k}" for w in ("base", "mask") for k in ("seed", "steps", "sampler", "cfg")})
    try:
        job = Job.from_dict(d, mask_tensor=demo_mask(args.size))
    except JobError as e:
        raise BadInput(f"{_flag(e.field, origins)}: {e.message}") from None
    return _run(args, job, Outputs(image=args.output, preview=preview, latent=args.save_latent), origins)


def cmd_batch(args) -> int:
    from ..batch import BatchInputError, run_batch

    for name in ("workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BadInput(f"--{name} {getattr(args, name)} is out of range (>= 1)")
    if args.retries < 0:
        raise BadInput(f"--retries {args.retries} is out of range (>= 0)")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"-o/--output-dir {args.output_dir} is not a folder (a batch writes its outputs, "
                       "manifest.jsonl and failures.jsonl into a folder)")
    try:
        defaults = {k: os.path.abspath(os.path.expanduser(v)) for k, v in
                    (("models", args.models), ("comfyui", args.comfyui), ("input_dir", args.input_dir)) if v}
        result = run_batch(args.jobs, args.output_dir, workers=args.workers, ray=args.ray, retries=args.retries,
                           quiet=args.quiet, threads=args.threads, workflow_defaults=defaults,
                           allow_pickle=args.allow_pickle)
    except BatchInputError as e:
        if len(e.errors) == 1:
            print(f"twosamplers: error: {_one_line(e.errors[0])} (the only bad line in {args.jobs}; nothing was "
                  "run)", file=sys.stderr)
            return EXIT_BAD_INPUT
        for line in e.errors:
            print(f"twosamplers: error: {_one_line(line)}", file=sys.stderr)
        print(f"twosamplers: {len(e.errors)} bad line(s) in {args.jobs}; nothing was run", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = {"total": result.total, "skipped": result.skipped, "rendered": result.rendered,
               "failed": len(result.failed), "duplicates": result.duplicates, "seconds": round(result.seconds, 3),
               "output_dir": str(args.output_dir)}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    elif not args.quiet or result.failed:
        print(f"batch: {result.rendered} rendered, {result.skipped} already done, {len(result.failed)} failed "
              f"of {result.total} jobs in {result.seconds:.1f} s -> {args.output_dir}", file=sys.stderr)
    if result.failed:
        print(f"twosamplers: {len(result.failed)} job(s) failed; see {Path(args.output_dir) / 'failures.jsonl'}",
              file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- run
def add_run_parser(sub) -> None:
    """`twosamplers run FILE`: a ComfyUI workflow (API or UI format JSON, or a PNG/WebP carrying one)."""
    r = sub.add_parser("run", help="run a ComfyUI workflow (JSON in API or UI format, or a PNG/WebP with one)",
                       description="Run a ComfyUI workflow headless: only the nodes its outputs need, each once. "
                       "CheckpointLoaderSimple also takes the embedded models 'textures' and 'ideal' by name. "
                       "The workflow is checked before anything runs; a bad one exits with status 2 and writes "
                       "nothing. Outputs: SaveImage -> PREFIX_00001_.png (the counter continues), SaveLatent -> "
                       ".latent, with the workflow embedded.")
    r.add_argument("file", nargs="?", metavar="FILE", help="workflow .json, or a .png/.webp that carries one")
    where = r.add_mutually_exclusive_group()
    where.add_argument("--models", metavar="DIR", help="folder with checkpoints/, loras/, ... (ComfyUI's models/)")
    where.add_argument("--comfyui", metavar="DIR", help="a ComfyUI install: its models/ and input/ folders and its "
                       "extra_model_paths.yaml")
    r.add_argument("--input-dir", metavar="DIR", help="where LoadImage / LoadImageMask / LoadLatent read files "
                   "(default: ./input, or the ComfyUI install's input/)")
    r.add_argument("--output-dir", metavar="DIR", default=".", help="where outputs are written (default: .)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID.INPUT=VALUE",
                   help="set a node input before running, e.g. --set 3.seed=42 --set 6.text='a red barn' "
                   "(VALUE is read as JSON when it parses, else as text); repeatable")
    r.add_argument("--device", help="device for checkpoints: cpu, cuda, cuda:1, ... (default: cuda if available)")
    _add_precision_flags(r, "network precision for checkpoints")
    r.add_argument("--allow-pickle", action="store_true", help="allow pickle model files (.ckpt checkpoints, .pt "
                   "hypernetworks, .pth ControlNets / upscalers, .bin LoRAs); they are read with "
                   "torch.load(weights_only=True), but only use files you trust")
    _add_memory_option(r)
    r.add_argument("--list-nodes", action="store_true",
                   help="list the supported node types (and model families) and exit")
    _add_common_output(r)
    r.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from ..workflow import NODES, run
    from ..workflow.execute import parse_value

    if args.list_nodes:
        from ..models.families import families_text
        from ..workflow import ALIASES, IN_PROGRESS, out_of_scope_markdown

        print("\n".join(sorted(NODES)))
        print("\nalso read under their older names: " + ", ".join(f"{json.dumps(a)} ({n})" for a, n in ALIASES.items()))
        print("\nmodel families (CheckpointLoaderSimple / UNETLoader / --model):\n" + families_text())
        print("\nrefused by design (each needs a model family or node pack this project does not run):")
        print(out_of_scope_markdown())
        if IN_PROGRESS:
            print("\nnot yet (other parts of the project are adding them): " + ", ".join(sorted(IN_PROGRESS)))
        return 0
    if args.file is None:
        raise BadInput("run needs a workflow FILE (or --list-nodes)")
    overrides = {}
    for item in args.overrides:
        key, eq, value = item.partition("=")
        if not eq:
            raise BadInput(f"--set {item!r} must look like ID.INPUT=VALUE (e.g. 3.seed=42)")
        overrides[key.strip()] = parse_value(value)
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"--output-dir {out_dir} is not a folder")
    t0 = time.perf_counter()
    check_device(args.device)
    outputs = run(args.file, args.models, overrides, comfyui=args.comfyui, input_dir=args.input_dir,
                  output_dir=out_dir, device=args.device, dtype=args.dtype, quiet=args.quiet or args.json,
                  allow_pickle=args.allow_pickle, check_memory=not args.ignore_memory_limit,
                  fp32_text_enc=args.fp32_text_enc)
    files = [f for o in outputs for f in o["files"]]
    if args.json:
        print(json.dumps({"outputs": [{"node": o["node"], "class_type": o["class_type"], "files": o["files"]}
                                      for o in outputs], "seconds": round(time.perf_counter() - t0, 3)}, indent=2))
    else:
        for f in files:
            print(f)
    return 0


def cmd_ui(args) -> int:
    if not 1 <= args.port <= 65535:
        raise BadInput(f"--port {args.port} is out of range (1 .. 65535)")
    try:
        from ..ui.app import launch
    except ImportError as e:
        raise BadInput(f"the web UI needs the [ui] extra: pip install 'twosamplers[ui]' ({e})") from None
    from ..ui.handlers import UIError
    from ..web.http_guard import Guard

    try:
        guard = Guard.for_bind(args.host, args.port, auth=args.auth, token=args.token)
    except ValueError as e:
        raise BadInput(str(e)) from None
    if args.outputs is not None and Path(args.outputs).exists() and not Path(args.outputs).is_dir():
        raise BadInput(f"--outputs {args.outputs} is not a folder")
    try:
        launch(host=args.host, port=args.port, models_dir=args.models, outputs_dir=args.outputs, guard=guard)
    except UIError as e:
        raise BadInput(str(e)) from None
    return 0


def cmd_serve(args) -> int:
    if not 1 <= args.port <= 65535:
        raise BadInput(f"--port {args.port} is out of range (1 .. 65535)")
    try:
        from ..server import ServeConfig, serve
    except ImportError as e:
        raise BadInput(f"serve needs the [server] extra: pip install 'twosamplers[server]' ({e})") from None
    config = ServeConfig(host=args.host, port=args.port, models=args.models, comfyui=args.comfyui,
                         input_dir=args.input_dir, output_dir=args.output_dir, preview_method=args.preview_method,
                         max_upload_mb=args.max_upload_mb, device=args.device, dtype=args.dtype, ray=args.ray,
                         ray_actors=args.ray_actors)
    serve(config, auth=args.auth, token=args.token, allowed_hosts=args.allowed_host)
    return 0


def main(argv: list[str] | None = None) -> int:
    # everything, the parser included (it imports torch and the models), runs inside the handlers: Ctrl-C at
    # any point is the one "interrupted" line, never a traceback
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        print("twosamplers: interrupted (no partial file was written)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BadInput, ValueError, FileNotFoundError, TypeError, NotImplementedError) as e:
        if os.environ.get("TWOSAMPLERS_DEBUG"):
            raise
        print(f"twosamplers: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # the machine, not the input (a full disk while writing): one line, exit status 1
        if os.environ.get("TWOSAMPLERS_DEBUG"):
            raise
        print(f"twosamplers: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # the last resort: never a traceback on the user's screen (input we failed to foresee)
        if os.environ.get("TWOSAMPLERS_DEBUG"):
            raise
        what = "out of memory" if isinstance(e, MemoryError) else f"{type(e).__name__}: {_one_line(e)}"
        print(f"twosamplers: error: {what} (unexpected; run with TWOSAMPLERS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_BAD_INPUT


MAX_MESSAGE = 2000  # an error naming a huge value (a hostile file's field) is cut, so the line stays a line


def _one_line(e: BaseException | str) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " ..."


if __name__ == "__main__":
    sys.exit(main())
