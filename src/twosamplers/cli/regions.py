"""`twosamplers generate`'s region flags, and the flag each region field came from (for one-line errors).

- `--region MASK PROMPT` (repeatable): a region. `--mask` / `--mask-prompt`, when given, are region 1 and the
  `--region`s follow; without them the first `--region` is region 1.
- `--regions FILE`: the regions as a JSON list of region objects, as a job stores them ({"mask", "prompt",
  "seed", "steps", "cfg", "sampler", "scheduler", "denoise", "negative", "model", "loras", "controlnets"});
  relative paths in it are relative to the file's folder.
- `--region-KEY N VALUE`: field KEY of region N (1, 2, ...; region 1 is the one `--mask-KEY` sets), e.g.
  `--region-seed 2 7`, `--region-sampler 3 dpmpp_2m`; `--region-lora N FILE[:S[:S_CLIP]]` and
  `--region-controlnet N FILE:IMAGE[:STRENGTH[:START:END]]` are repeatable. With `--from`, they change one region
  of the PNG's job (`--region-mask 2 new.png` replaces its mask).
Plain flags (`--seed`, `--lora`, ...) set every region as they set both passes of a two-pass job.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# --region-KEY N VALUE: key -> (type, metavar, what)
SCALAR_OPTIONS = {
    "prompt": (str, "PROMPT", "prompt"), "mask": (str, "PNG", "mask image"),
    "negative": (str, "PROMPT", "negative prompt"), "model": (str, "NAME|PATH", "model"),
    "seed": (int, "SEED", "noise seed"), "steps": (int, "STEPS", "steps"), "cfg": (float, "CFG", "guidance scale"),
    "sampler": (str, "NAME", "sampler"), "scheduler": (str, "NAME", "scheduler"),
    "denoise": (float, "DENOISE", "denoise"),
}
LIST_OPTIONS = {"lora": ("loras", "FILE[:S[:S_CLIP]]"), "controlnet": ("controlnets",
                                                                      "FILE:IMAGE[:STRENGTH[:START:END]]")}


class _RegionOption(argparse.Action):
    """--region-KEY N VALUE -> args.region_patches: [(flag, region index, job key, value, repeatable), ...]."""

    def __init__(self, option_strings, dest, key: str, convert, repeat: bool = False, **kwargs):
        super().__init__(option_strings, "region_patches", nargs=2, default=None, **kwargs)
        self.key, self.convert, self.repeat = key, convert, repeat

    def __call__(self, parser, namespace, values, option_string=None):
        n, raw = values
        try:
            number = int(n)
        except ValueError:
            number = 0
        if number < 1:
            parser.error(f"{option_string}: N must be a region number (1, 2, ...), got {n!r}")
        try:
            value = self.convert(raw)
        except ValueError:
            parser.error(f"{option_string} {n}: {raw!r} is not a valid {self.convert.__name__}")
        patches = list(getattr(namespace, "region_patches", None) or [])
        patches.append((option_string, number - 1, self.key, value, self.repeat))
        namespace.region_patches = patches


def add_region_options(g: argparse.ArgumentParser) -> None:
    r = g.add_argument_group("regions (several regions need --mode interleaved, regional (their default) or joint; "
                             "N is a region's number, 1, 2, ...: --mask is region 1, the --region's follow)")
    r.add_argument("--region", dest="region_args", nargs=2, action="append", metavar=("MASK", "PROMPT"),
                   help="a region: its mask image and its prompt (repeatable)")
    r.add_argument("--regions", dest="regions_file", metavar="JSON", help="the regions as a JSON list of "
                   "{\"mask\", \"prompt\", \"seed\", \"steps\", \"cfg\", \"sampler\", \"scheduler\", \"denoise\", "
                   "\"negative\", \"model\", \"loras\", \"controlnets\"}; paths relative to the file's folder")
    for key, (convert, metavar, what) in SCALAR_OPTIONS.items():
        r.add_argument(f"--region-{key}", action=_RegionOption, key=key, convert=convert, metavar=("N", metavar),
                       help=f"the {what} of region N")
    for flag, (key, metavar) in LIST_OPTIONS.items():
        r.add_argument(f"--region-{flag}", action=_RegionOption, key=key, convert=str, repeat=True,
                       metavar=("N", metavar), help=f"a {flag} for region N (repeatable; after the plain --{flag}s)")


def region_fields(args: argparse.Namespace, given: dict) -> tuple[list | None, dict[int, dict], dict[str, str]]:
    """(the regions the flags list, or None when they list none; {region index: fields} of --region-KEY N;
    {field: the flag it came from}). `given`: the job fields of the other flags; `--mask` / `--mask-prompt` are
    taken out of it when they are region 1 of a listed set."""
    listed, origins = None, {}
    if getattr(args, "regions_file", None):
        listed = _regions_file(args.regions_file)
        origins.update({f"regions[{i}].{k}": f"--regions {args.regions_file} (region {i + 1})"
                        for i, r in enumerate(listed) if isinstance(r, dict) for k in r})
    if getattr(args, "region_args", None):
        listed = (listed or []) + [{"mask": m, "prompt": p} for m, p in args.region_args]
    if listed is not None:
        first = {k: given.pop(f, None) for k, f in (("mask", "mask"), ("prompt", "mask_prompt"))}
        if any(v is not None for v in first.values()):  # --mask / --mask-prompt: region 1, before the listed ones
            listed = [{k: v for k, v in first.items() if v is not None}, *listed]
            origins.update({"regions[0].mask": "--mask", "regions[0].prompt": "--mask-prompt"})
        for i in range(len(listed)):
            origins.setdefault(f"regions[{i}].mask", f"--region (region {i + 1})")
            origins.setdefault(f"regions[{i}].prompt", f"--region (region {i + 1})")
    patches: dict[int, dict] = {}
    for flag, i, key, value, repeat in getattr(args, "region_patches", None) or []:
        fields = patches.setdefault(i, {})
        fields[key] = [*fields.get(key, []), value] if repeat else value
        origins[f"regions[{i}].{key}"] = f"{flag} {i + 1}"
        origins.setdefault(f"regions[{i}]", f"{flag} {i + 1}")
    return listed, patches, origins


def _regions_file(path: str) -> list:
    """The regions of a --regions JSON file, relative paths made absolute against its folder (ValueError: one line
    naming the flag, exit status 2)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"--regions {path}: cannot read it: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"--regions {path}: not a JSON list of regions: {e}") from None
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ValueError(f"--regions {path}: must be a JSON list of region objects ({{\"mask\", \"prompt\", ...}})")
    folder = p.resolve().parent
    return [_resolved(r, folder) for r in raw]


def _resolved(region: dict, folder: Path) -> dict:
    """A region with its files (mask, model, ControlNet files and hints) found beside the regions file, when they
    are there."""
    from ..job.forms import map_files

    def local(kind: str, key: str, v):
        relative = isinstance(v, str) and v and not os.path.isabs(os.path.expanduser(v))
        return str(folder / v) if relative and (folder / v).exists() else v

    return map_files(region, local)


def region_flag(field: str) -> str:
    """The flag that sets field `regions[i].key...`: "--region-seed 2" (region i + 1), "--region" for the list."""
    head, _, rest = field.partition(".")
    index, key = head[len("regions["):-1], rest.split("[")[0]
    if not index.isdigit():
        return "--region"
    if not key:
        return f"--region (region {int(index) + 1})"
    flag = next((f for f, (k, _) in LIST_OPTIONS.items() if k == key), key)
    return f"--region-{flag.replace('_', '-')} {int(index) + 1}"


__all__ = ["add_region_options", "region_fields", "region_flag"]
