import pytest
import torch
from safetensors.torch import save_file

from twosamplers.engine.latent import empty_latent, load_latent, save_latent


def test_empty_latent():
    lat = empty_latent(512, 256, batch_size=2)
    assert lat["samples"].shape == (2, 4, 32, 64) and not lat["samples"].any()
    with pytest.raises(ValueError, match="width=500 must be a multiple of 8"):
        empty_latent(500, 512)
    with pytest.raises(ValueError, match="batch_size"):
        empty_latent(64, 64, batch_size=0)


def test_latent_file_round_trip(tmp_path):
    lat = {"samples": torch.randn(2, 4, 8, 8)}
    path = save_latent(tmp_path / "a.latent", lat, metadata={"seed": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.latent"]  # no temp file left
    back = load_latent(path)
    assert torch.equal(back["samples"], lat["samples"])


def test_old_format_is_rescaled(tmp_path):
    t = torch.randn(1, 4, 8, 8)
    save_file({"latent_tensor": t}, str(tmp_path / "old.latent"))
    back = load_latent(tmp_path / "old.latent")
    assert torch.allclose(back["samples"], t / 0.18215)


def test_latent_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_latent(tmp_path / "missing.latent")
    (tmp_path / "junk.latent").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_latent(tmp_path / "junk.latent")
    save_file({"other": torch.zeros(1)}, str(tmp_path / "wrong.latent"))
    with pytest.raises(ValueError, match="latent_tensor"):
        load_latent(tmp_path / "wrong.latent")


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.latent"
    save_latent(path, {"samples": torch.ones(1, 4, 2, 2)})
    import twosamplers.engine.latent as mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_latent(path, {"samples": torch.zeros(1, 4, 2, 2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.latent"]
    assert torch.equal(load_latent(path)["samples"], torch.ones(1, 4, 2, 2))


def test_saved_file_has_usual_permissions(tmp_path):
    import os

    path = save_latent(tmp_path / "p.latent", {"samples": torch.zeros(1, 4, 2, 2)})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
