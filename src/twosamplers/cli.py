"""The `twosamplers` command line: `generate` (one sampler outside a mask, another inside) and `demo`.

Bad input (missing or unreadable file, mask of another aspect ratio, unknown model or prompt word, sizes
that the model cannot take, ...) prints one line on stderr and exits with status 2 before anything is
written. Outputs are written atomically after sampling, so an existing file is only ever replaced whole and
Ctrl-C (exit status 130) leaves no partial file. Every setting, the seeds and the mask go into the PNG's
text chunks; `twosamplers generate --from out.png` renders the same picture again (other flags override).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

PASS_KEYS = ("seed", "steps", "cfg", "sampler", "scheduler", "denoise", "negative")
GLOBAL_KEYS = ("base_prompt", "mask_prompt", "model", "width", "height", "image", "mask", "mask_channel",
               "invert_mask", "mode", "inversion", "base_covers_mask", "grow", "feather", "differential",
               "crop_to_mask", "crop_context", "overlap_factor", "base_only_steps", "clip_skip", "prediction")
DEFAULTS = {"seed": 0, "steps": 20, "sampler": "euler", "scheduler": "normal", "denoise": 1.0, "negative": "",
            "model": "textures", "mask_channel": "gray", "invert_mask": False, "mode": "two-pass",
            "inversion": "soft", "base_covers_mask": True, "grow": 0, "feather": 0.0, "differential": False,
            "crop_to_mask": False, "crop_context": 8, "overlap_factor": 10, "base_only_steps": 1}
DEFAULT_CFG = {"textures": 3.0, "ideal": 3.0}  # the analytic models; checkpoints default to 8.0 like ComfyUI
DEFAULT_SIZE = 256
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class BadInput(Exception):
    """An error in what the user gave: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _names():
    from .samplers import SAMPLER_NAMES
    from .schedules import SCHEDULER_NAMES
    return SAMPLER_NAMES, SCHEDULER_NAMES


def _add_pass_options(p: argparse.ArgumentParser) -> None:
    samplers, schedulers = _names()
    spec = {
        "seed": dict(type=int, help="noise seed (default 0)"),
        "steps": dict(type=int, help="sampling steps (default 20)"),
        "cfg": dict(type=float, help="classifier-free guidance scale (default 3 for textures/ideal, 8 otherwise)"),
        "sampler": dict(choices=samplers, metavar="NAME", help="sampler name, as in ComfyUI (default euler)"),
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


def _add_common_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the settings and output paths as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (they only show on a terminal)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .models.analytic import load_textures

    words = ", ".join(load_textures().names)
    parser = _Parser(prog="twosamplers", description="Region-masked diffusion sampling: one sampler outside a "
                     "mask, another inside, with ComfyUI's numbers.")
    parser.add_argument("--version", action="version", version=f"twosamplers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

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
    g.add_argument("--mask-channel", choices=("gray", "alpha", "red", "green", "blue"), default=None,
                   help="channel the mask is read from (default gray; alpha is inverted, as in ComfyUI)")
    g.add_argument("--invert-mask", action=argparse.BooleanOptionalAction, default=None, help="invert the mask")
    g.add_argument("--image", metavar="PNG", help="start from this image (use --denoise < 1 to keep some of it)")
    g.add_argument("--width", type=int, help=f"output width (default: the image's, else {DEFAULT_SIZE})")
    g.add_argument("--height", type=int, help=f"output height (default: the image's, else from the mask's "
                   f"aspect ratio, else {DEFAULT_SIZE})")
    g.add_argument("--model", metavar="NAME|PATH", help="textures (default), ideal, or an SD checkpoint path")
    m = g.add_argument_group("loading SD checkpoints (--model PATH)")
    m.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    m.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="network precision (default: fp16 on cuda, "
                   "fp32 on cpu)")
    m.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.pt (pickle) checkpoints; they can run "
                   "code when loaded, so only use files you trust")
    m.add_argument("--clip-skip", type=int, help="text encoder layer, as ComfyUI's CLIPSetLastLayer: -1 last, "
                   "-2 penultimate, ... (a positive n means -n, A1111 style)")
    m.add_argument("--prediction", choices=("eps", "v"), help="override the prediction type (SD2.x 768 models are v)")
    g.add_argument("--mode", choices=("two-pass", "interleaved", "regional"), default=None,
                   help="two-pass: a base pass over the whole image, then the mask pass (default); "
                   "interleaved/regional: both samplers step by step")
    g.add_argument("--inversion", choices=("soft", "binary"), default=None,
                   help="base-pass mask when --no-base-covers-mask: 1 - mask (soft) or mask != 1 (binary)")
    g.add_argument("--base-covers-mask", action=argparse.BooleanOptionalAction, default=None,
                   help="the base pass renders the whole image (default yes)")
    g.add_argument("--grow", type=int, help="grow (or, negative, shrink) the mask by this many pixels")
    g.add_argument("--feather", type=float, help="feather the mask edge (Gaussian sigma, pixels)")
    g.add_argument("--differential", action=argparse.BooleanOptionalAction, default=None,
                   help="grey mask values = per-pixel denoise (Differential Diffusion), two-pass mode")
    g.add_argument("--crop-to-mask", action=argparse.BooleanOptionalAction, default=None,
                   help="sample the mask pass only in the mask's bounding box (two-pass mode)")
    g.add_argument("--crop-context", type=int, help="pixels of context around the crop box (latent px, default 8)")
    g.add_argument("--overlap-factor", type=int, help="interleaved/regional: mask overlap (default 10)")
    g.add_argument("--base-only-steps", type=int, help="interleaved/regional: steps before the mask joins "
                   "(default 1)")
    _add_pass_options(g)
    g.add_argument("-o", "--output", metavar="PNG", required=False, help="output PNG (required)")
    g.add_argument("--save-latent", metavar="FILE", help="also write the result as a ComfyUI .latent file")
    g.add_argument("--preview", metavar="PNG", help="also write a side-by-side preview: mask | base | result")
    _add_common_output(g)
    g.set_defaults(func=cmd_generate)

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
    d.add_argument("--cfg", type=float, default=None, help="guidance scale (default 3)")
    d.add_argument("--sampler", choices=_names()[0], metavar="NAME", default="euler", help="sampler (default euler)")
    d.add_argument("--base-prompt", default="grass", help="prompt outside the disc (default grass)")
    d.add_argument("--mask-prompt", default="brick", help="prompt inside the disc (default brick)")
    d.add_argument("--model", default="textures", metavar="NAME|PATH", help="model (default textures)")
    d.add_argument("--feather", type=float, default=2.0, help="feather of the disc edge in pixels (default 2)")
    d.add_argument("--save-latent", metavar="FILE", help="also write the result as a ComfyUI .latent file")
    _add_common_output(d)
    d.set_defaults(func=cmd_demo)
    add_run_parser(sub)
    return parser


# ---------------------------------------------------------------------------------------------- settings
def resolve_settings(args: argparse.Namespace, stored: dict | None) -> dict:
    """Explicit --base-X / --mask-X > explicit --X > the --from PNG's value > the default."""
    stored = stored or {}
    out: dict = {}
    for key in GLOBAL_KEYS:
        v = getattr(args, key, None)
        if v is None:
            v = stored.get(key, DEFAULTS.get(key))
        out[key] = v
    for which in ("base", "mask"):
        for key in PASS_KEYS:
            v = getattr(args, f"{which}_{key}", None)
            if v is None:
                v = getattr(args, key, None)
            if v is None:
                v = stored.get(f"{which}_{key}", DEFAULTS.get(key))
            out[f"{which}_{key}"] = v
    if out["model"] is None:
        out["model"] = DEFAULTS["model"]
    cfg_default = DEFAULT_CFG.get(str(out["model"]), 8.0)
    for which in ("base", "mask"):
        if out[f"{which}_cfg"] is None:
            out[f"{which}_cfg"] = cfg_default
    return out


def _check_number(name: str, value, lo=None, hi=None, integer=False):
    if value is None:
        return
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadInput(f"{name} must be an integer, got {value!r}")
    if not integer and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
        raise BadInput(f"{name} must be a number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"{lo} .. {hi}" if hi is not None else f">= {lo}"
        raise BadInput(f"{name}={value} is out of range ({rng})")


def validate_settings(s: dict) -> None:
    samplers, schedulers = _names()
    for which in ("base", "mask"):
        _check_number(f"--{which}-seed", s[f"{which}_seed"], 0, 2**64 - 1, integer=True)
        _check_number(f"--{which}-steps", s[f"{which}_steps"], 1, 10000, integer=True)
        _check_number(f"--{which}-cfg", s[f"{which}_cfg"], 0.0, 100.0)
        _check_number(f"--{which}-denoise", s[f"{which}_denoise"], 0.0, 1.0)
        if s[f"{which}_sampler"] not in samplers:
            raise BadInput(f"unknown sampler {s[f'{which}_sampler']!r}; valid: {', '.join(samplers)}")
        if s[f"{which}_scheduler"] not in schedulers:
            raise BadInput(f"unknown scheduler {s[f'{which}_scheduler']!r}; valid: {', '.join(schedulers)}")
    for key in ("width", "height"):
        _check_number(f"--{key}", s[key], 1, 16384, integer=True)
    _check_number("--grow", s["grow"], integer=True)
    _check_number("--feather", s["feather"], 0.0)
    _check_number("--crop-context", s["crop_context"], 0, integer=True)
    _check_number("--overlap-factor", s["overlap_factor"], 0, integer=True)
    _check_number("--base-only-steps", s["base_only_steps"], 0, integer=True)
    if s["base_prompt"] is None or s["mask_prompt"] is None:
        raise BadInput("--base-prompt and --mask-prompt are required (or --from a PNG written by twosamplers)")


def _check_output_path(path: str | None, what: str) -> None:
    if path is None:
        return
    p = Path(path)
    if p.exists() and p.is_dir():
        raise BadInput(f"{what} {path} is a folder")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"the folder of {what} {path} does not exist")


# ---------------------------------------------------------------------------------------------- the job
def run_job(s: dict, mask, *, output: str, preview: str | None = None, save_latent: str | None = None,
            quiet: bool = False, load_options: dict | None = None) -> dict:
    """Validate everything, sample, then write the outputs. Returns {"outputs": ..., "seconds": ...}."""
    from .imageio import check_aspect, load_image, resize_mask, save_png, side_by_side, to_uint8
    from .latent import empty_latent
    from .latent import save_latent as write_latent
    from .models import load

    validate_settings(s)
    for path, what in ((output, "output"), (preview, "preview"), (save_latent, "latent output")):
        _check_output_path(path, what)
    t0 = time.perf_counter()
    options = {k: s[k] for k in ("clip_skip", "prediction") if s.get(k) is not None}
    options.update({k: v for k, v in (load_options or {}).items() if v})
    model = load(s["model"], **options)
    fmt = model.latent_format
    factor = int(fmt.downscale)

    pixels = None
    if s["image"] is not None:
        pixels = load_image(s["image"])
        ih, iw = pixels.shape[1:3]
        for key, v in (("width", iw), ("height", ih)):
            if s[key] is not None and s[key] != v:
                raise BadInput(f"--{key} {s[key]} differs from the image's {key} {v}; resize the image instead")
        s["width"], s["height"] = iw, ih
    mh, mw = mask.shape[-2:]
    if s["width"] is None and s["height"] is None:
        s["width"] = s["height"] = DEFAULT_SIZE
        if mw != mh:  # keep the mask's aspect ratio at about DEFAULT_SIZE^2 pixels, on the model's grid
            scale = math.sqrt(DEFAULT_SIZE * DEFAULT_SIZE / (mw * mh))
            s["width"] = max(factor, round(mw * scale / factor) * factor)
            s["height"] = max(factor, round(mh * scale / factor) * factor)
    elif s["width"] is None:
        s["width"] = max(factor, round(s["height"] * mw / mh / factor) * factor)
    elif s["height"] is None:
        s["height"] = max(factor, round(s["width"] * mh / mw / factor) * factor)
    w, h = s["width"], s["height"]
    for key, v in (("width", w), ("height", h)):
        if v % factor:
            raise BadInput(f"{key} {v} is not a multiple of {factor}, which the model {s['model']!r} needs")
    try:
        check_aspect((mh, mw), (h, w))
    except ValueError as e:
        raise BadInput(str(e)) from None

    prompts = {}
    for key in ("base_prompt", "mask_prompt", "base_negative", "mask_negative"):
        prompts[key] = model.encode_prompt(s[key])

    if pixels is not None:
        samples = model.encode_image(pixels)
        latent = {"samples": samples}
    else:
        latent = empty_latent(w, h, channels=fmt.channels, downscale=factor)

    try:
        from .front import SamplerSettings, two_samplers_for_mask
    except ImportError as e:  # the front door ships with the package; this is a broken install
        raise RuntimeError(f"twosamplers.front is missing ({e})") from e

    def settings_for(which: str):
        return SamplerSettings(model=model, positive=prompts[f"{which}_prompt"], negative=prompts[f"{which}_negative"],
                               seed=s[f"{which}_seed"], steps=s[f"{which}_steps"], cfg=float(s[f"{which}_cfg"]),
                               sampler_name=s[f"{which}_sampler"], scheduler=s[f"{which}_scheduler"],
                               denoise=float(s[f"{which}_denoise"]))

    base, inside = settings_for("base"), settings_for("mask")
    captured = {}
    callback = None
    if preview is not None and s["mode"] == "two-pass":
        n_base = max(0, len(base.sigmas()) - 1)

        def callback(step, x0, x, total):
            if step == n_base - 1:  # the base pass's last denoised prediction: its result, for the preview
                captured["base"] = x0.detach().clone()

    result = two_samplers_for_mask(
        latent, mask, base, inside, mode=s["mode"], inversion=s["inversion"], base_covers_mask=s["base_covers_mask"],
        grow=s["grow"], feather=float(s["feather"]), differential=s["differential"], crop_to_mask=s["crop_to_mask"],
        crop_context=s["crop_context"], overlap_factor=s["overlap_factor"], base_only_steps=s["base_only_steps"],
        callback=callback, disable_pbar=True if quiet else None)
    samples = result["samples"]
    image = model.decode_latent(samples)
    seconds = time.perf_counter() - t0

    stored = {k: v for k, v in s.items() if k != "mask"}
    stored["mask"] = s.get("mask")
    stored["twosamplers_version"] = _version()
    outputs = {"image": str(output)}
    save_png(output, image[:1], settings=stored, mask=mask)
    if save_latent is not None:
        write_latent(save_latent, {"samples": samples}, metadata={"twosamplers": json.dumps(stored, sort_keys=True)})
        outputs["latent"] = str(save_latent)
    if preview is not None:
        m8 = to_uint8(resize_mask(mask, h, w)[..., None].expand(h, w, 3).clamp(0, 1))
        tiles = [m8]
        if "base" in captured:
            tiles.append(to_uint8(model.decode_latent(fmt.process_out(captured["base"]))[0]))
        tiles.append(to_uint8(image[0]))
        save_png(preview, side_by_side(tiles), text={"twosamplers-preview": "mask | base | result"
                                                     if len(tiles) == 3 else "mask | result"})
        outputs["preview"] = str(preview)
    return {"outputs": outputs, "seconds": round(seconds, 3)}


def _version() -> str:
    from . import __version__
    return __version__


def demo_mask(size: int):
    """A disc (radius 0.3 of the side), anti-aliased over about a pixel, quantized to 8 bits."""
    import torch

    r = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    dist = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)
    m = (0.3 * size - dist + 0.5).clamp(0, 1)
    return torch.round(m * 255) / 255


# ---------------------------------------------------------------------------------------------- commands
def _finish(args, s: dict, job: dict) -> None:
    if args.json:
        print(json.dumps({"settings": s, **job}, sort_keys=True))
    else:
        outs = ", ".join(job["outputs"].values())
        print(f"wrote {outs} in {job['seconds']:.1f} s", file=sys.stderr if not sys.stdout.isatty() else sys.stdout)


def cmd_generate(args) -> int:
    from .imageio import load_mask, read_settings

    stored, embedded = (None, None)
    if args.from_png:
        stored, embedded = read_settings(args.from_png)
    s = resolve_settings(args, stored)
    if args.output is None:
        raise BadInput("-o/--output is required")
    if args.mask is not None:
        mask = load_mask(args.mask, s["mask_channel"], s["invert_mask"])
        s["mask"] = str(args.mask)
    elif embedded is not None:
        mask = embedded  # the mask as it was used (channel and inversion already applied)
        s["mask_channel"], s["invert_mask"] = "gray", False
    else:
        raise BadInput("--mask is required (or --from a PNG written by twosamplers)")
    load_options = {"device": args.device, "dtype": args.dtype, "allow_pickle": args.allow_pickle}
    job = run_job(s, mask, output=args.output, preview=args.preview, save_latent=args.save_latent, quiet=args.quiet,
                  load_options=load_options)
    _finish(args, s, job)
    return 0


def cmd_demo(args) -> int:
    if not 8 <= args.size <= 4096:
        raise BadInput(f"--size {args.size} is out of range (8 .. 4096)")
    preview = None
    if not args.no_preview:
        out = Path(args.output)
        preview = args.preview or str(out.with_name(f"{out.stem}-preview{out.suffix or '.png'}"))
    ns = argparse.Namespace(base_prompt=args.base_prompt, mask_prompt=args.mask_prompt, model=args.model,
                            width=args.size, height=args.size, seed=args.seed, steps=args.steps, cfg=args.cfg,
                            sampler=args.sampler, feather=args.feather, crop_to_mask=True)
    s = resolve_settings(ns, None)
    s["mask"] = "demo-disc"
    job = run_job(s, demo_mask(args.size), output=args.output, preview=preview, save_latent=args.save_latent,
                  quiet=args.quiet)
    _finish(args, s, job)
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
    r.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="network precision for checkpoints")
    r.add_argument("--list-nodes", action="store_true", help="list the supported node types and exit")
    _add_common_output(r)
    r.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from .workflow import NODES, run
    from .workflow.execute import parse_value

    if args.list_nodes:
        print("\n".join(sorted(NODES)))
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
    outputs = run(args.file, args.models, overrides, comfyui=args.comfyui, input_dir=args.input_dir,
                  output_dir=out_dir, device=args.device, dtype=args.dtype, quiet=args.quiet or args.json)
    files = [f for o in outputs for f in o["files"]]
    if args.json:
        print(json.dumps({"outputs": [{"node": o["node"], "class_type": o["class_type"], "files": o["files"]}
                                      for o in outputs], "seconds": round(time.perf_counter() - t0, 3)}, indent=2))
    else:
        for f in files:
            print(f)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("twosamplers: interrupted (no partial file was written)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (BadInput, ValueError, FileNotFoundError, TypeError, NotImplementedError) as e:
        if os.environ.get("TWOSAMPLERS_DEBUG"):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"twosamplers: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
