"""What the end-to-end references hold and how a run is compared with them (shared by the maker and the checker).

Keys (as the ComfyUI kit's run_workflow.py dumps them): `node/<id>/<i>` output i of a node (IMAGE, MASK, a
LATENT's samples, `.../noise_mask`), `cond/<id>` (and `cond/<id>/<i>`) a node's CONDITIONING, `saved/<id>` what a
SaveImage got. Latents and images are kept whole (float32); a conditioning tensor (1, L, D) is kept as a sketch
(1, L, 9): its projections on 8 fixed random unit directions and each token's largest |value|, float32. Any
change to the conditioning moves its sketch; the latents and images are what parity is judged on.

Tolerances (issue 22): latents <= 2e-3, images <= 1e-3 (max |diff|); masks <= 1e-5; conditioning sketches
<= 2e-3 relative to the sketch's largest |value| (diagnostic: it shows where two runs part).
"""

from __future__ import annotations

import numpy as np

LATENT_TOL = 2e-3
IMAGE_TOL = 1e-3
MASK_TOL = 1e-5
COND_REL_TOL = 2e-3
SKETCH_DIMS = 8

IMAGE_NODES = {"VAEDecode", "LoadImage", "ImageScale", "SaveImage", "PreviewImage", "MaskToImage"}
MASK_NODES = {"LoadImageMask", "ImageToMask", "SolidMask", "InvertMask", "GrowMask", "FeatherMask"}


def _directions(width: int) -> np.ndarray:
    g = np.random.Generator(np.random.PCG64([22, width]))
    r = g.standard_normal((width, SKETCH_DIMS))
    return (r / np.linalg.norm(r, axis=0, keepdims=True)).astype(np.float64)


def sketch(cond: np.ndarray) -> np.ndarray:
    """(B, L, D) conditioning -> (B, L, 9) float32: projections on 8 fixed directions, and max |x| per token."""
    c = np.asarray(cond, dtype=np.float64)
    proj = c @ _directions(c.shape[-1])
    return np.concatenate([proj, np.abs(c).max(axis=-1, keepdims=True)], axis=-1).astype(np.float32)


def kind_of(key: str, workflow: dict) -> str:
    """"latent" | "image" | "mask" | "cond" for a key of a case's workflow."""
    parts = key.split("/")
    if parts[0] == "cond":
        return "cond"
    node = workflow.get(parts[1], {})
    ct = node.get("class_type", "")
    if parts[0] == "saved":
        return "image" if ct in ("SaveImage", "PreviewImage") else "latent"
    if key.endswith("/noise_mask") or ct in MASK_NODES:
        return "mask"
    if ct in IMAGE_NODES or (ct == "LoadImage" and parts[2] == "0"):
        return "image"
    if ct == "LoadImage":
        return "mask"
    return "latent"


def diff(kind: str, ours: np.ndarray, ref: np.ndarray) -> tuple[float, float, bool]:
    """(max |diff|, tolerance, within) for one key; a shape mismatch is never within."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if kind == "cond" and ours.shape[-1] != SKETCH_DIMS + 1:
        ours = sketch(ours).astype(np.float64)
    if ours.shape != ref.shape:
        return float("inf"), 0.0, False
    if kind == "cond":
        scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
        tol = COND_REL_TOL * scale
    else:
        tol = {"latent": LATENT_TOL, "image": IMAGE_TOL, "mask": MASK_TOL}[kind]
    d = float(np.abs(ours - ref).max()) if ref.size else 0.0
    return d, tol, bool(np.isfinite(d) and d <= tol)


def natural_key(s: str) -> list:
    import re

    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", s) if t]


def dependency_order(workflow: dict) -> list[str]:
    """Node ids depth-first from the lowest id, inputs before users (the kit's run_workflow.py order)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(n: str) -> None:
        if n in done:
            return
        done.add(n)
        for v in workflow[n]["inputs"].values():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in workflow:
                visit(v[0])
        order.append(n)

    for n in sorted(workflow, key=natural_key):
        visit(n)
    return order
