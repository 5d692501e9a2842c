"""Fetch the corpus workflows this repository does not keep (their licence, GPL-3.0, does not let us ship them)
into a cache folder for `benchmarks/real_workflows.py --cache DIR`. Each comes from its repository at the commit
recorded in benchmarks/real_workflows/manifest.json, so the corpus is the same wherever it is fetched.

    python benchmarks/fetch_workflows.py --cache wf-cache                       # from GitHub (needs the network)
    python benchmarks/fetch_workflows.py --cache wf-cache --mirror ltdrdata/ComfyUI-Impact-Pack=~/src/impact
                                                                              # from a local clone (git show)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "real_workflows"


def fetch(entry: dict, mirrors: dict[str, Path]) -> bytes:
    repo, commit, path = entry["repo"], entry["commit"], entry["path"]
    if repo in mirrors:
        return subprocess.check_output(["git", "-C", str(mirrors[repo]), "show", f"{commit}:{path}"])
    url = f"https://raw.githubusercontent.com/{repo}/{commit}/{urllib.request.quote(path)}"
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def workflow_bytes(entry: dict, data: bytes) -> bytes:
    """The workflow itself: a PNG's embedded workflow (UI format) or prompt (API format), as the entry says."""
    if not entry["path"].lower().endswith(".png"):
        return data
    import io

    from PIL import Image

    chunk = "prompt" if entry["format"] == "api" else "workflow"
    text = Image.open(io.BytesIO(data)).info.get(chunk)
    if text is None:
        raise ValueError(f"the PNG has no {chunk!r} text chunk")
    return text.encode("utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--mirror", action="append", default=[], metavar="OWNER/NAME=DIR",
                    help="read that repository from a local git clone instead of the network")
    args = ap.parse_args(argv)
    mirrors = {}
    for m in args.mirror:
        repo, _, d = m.partition("=")
        mirrors[repo] = Path(d).expanduser()
    failed = 0
    for entry in json.loads((CORPUS / "manifest.json").read_text())["workflows"]:
        if entry["kept"]:
            continue
        target = args.cache / entry["file"]
        if target.is_file():
            continue
        try:
            data = workflow_bytes(entry, fetch(entry, mirrors))
            json.loads(data)
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            print(f"failed: {entry['repo']}:{entry['path']}@{entry['commit'][:10]}: {e}", file=sys.stderr)
            failed += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        print(f"fetched {entry['name']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
