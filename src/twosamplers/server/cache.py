"""Node results kept between prompts: a node whose inputs did not change is not run again (ComfyUI's cache).

A node's signature is a hash of its type, its constant inputs, the signatures of the nodes its links come from
(with the slot), and the contents of the input-folder files it reads (LoadImage's image: a re-uploaded file
with the same name is a change). Results are kept for the nodes of the latest prompt only, as ComfyUI's
default cache does; models stay loaded in the `ModelCache` in any case. Output nodes are never taken from the
cache: they run every time, so every prompt gets its files (ComfyUI skips an unchanged SaveImage and returns
no new image; docs/serve.md).
"""

from __future__ import annotations

import hashlib
import json

from ..nodes.registry import NODES
from ..workflow.graph import is_link


def _file_digest(folders, name) -> str:
    try:
        path = folders.input_path(name)
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError, TypeError):
        return "missing"


class NodeCache:
    def __init__(self) -> None:
        self.results: dict[str, tuple[tuple, dict]] = {}

    @staticmethod
    def signatures(prompt: dict, order: list[str], folders) -> dict[str, str]:
        """Signature of each node in `order` (dependencies first)."""
        sigs: dict[str, str] = {}
        for nid in order:
            node = prompt[nid]
            cls = NODES.get(node["class_type"])
            inputs = {}
            for name, value in sorted(node["inputs"].items()):
                if is_link(value) and str(value[0]) in sigs:
                    inputs[name] = ["link", sigs[str(value[0])], value[1]]
                else:
                    inputs[name] = ["value", value]
            files = {n: _file_digest(folders, node["inputs"][n]) for n in getattr(cls, "INPUT_FILES", ())
                     if isinstance(node["inputs"].get(n), str)}
            text = json.dumps([node["class_type"], inputs, files], sort_keys=True, default=repr)
            sigs[nid] = hashlib.sha256(text.encode()).hexdigest()
        return sigs

    def lookup(self, prompt: dict, sigs: dict[str, str]) -> dict[str, tuple[tuple, dict]]:
        """{node id: (outputs, ui)} of the non-output nodes whose signature has a kept result."""
        out = {}
        for nid, sig in sigs.items():
            if getattr(NODES.get(prompt[nid]["class_type"]), "OUTPUT_NODE", False):
                continue
            if sig in self.results:
                out[nid] = self.results[sig]
        return out

    def keep(self, prompt: dict, sigs: dict[str, str], computed: dict[str, tuple[tuple, dict]]) -> None:
        """After a prompt: keep the results of its nodes (the ones computed now and the ones reused), drop the
        rest."""
        kept = {}
        for nid, sig in sigs.items():
            if getattr(NODES.get(prompt[nid]["class_type"]), "OUTPUT_NODE", False):
                continue
            if nid in computed:
                kept[sig] = computed[nid]
            elif sig in self.results:
                kept[sig] = self.results[sig]
        self.results = kept

    def clear(self) -> None:
        self.results = {}


__all__ = ["NodeCache"]
