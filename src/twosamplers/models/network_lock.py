"""One lock per network module: whatever changes a network's weights (LoRA / merge patching, packing its
convolutions) holds it, so that two threads never change the same weights at once."""

from __future__ import annotations

import threading
import weakref

import torch

_LOCK = threading.Lock()
_NETWORK_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> RLock


def network_lock(root: torch.nn.Module) -> threading.RLock:
    """The (re-entrant) lock of `root`, made on first use."""
    with _LOCK:
        lock = _NETWORK_LOCKS.get(root)
        if lock is None:
            lock = _NETWORK_LOCKS[root] = threading.RLock()
        return lock


__all__ = ["network_lock"]
