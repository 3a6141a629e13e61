"""Which VAE a server job uses for ``sd_vae``, as A1111 v1.10.1 resolves it (files are only listed here)."""

from __future__ import annotations

import pytest

from retouch.serving.models import ModelManager


@pytest.fixture
def dirs(tmp_path):
    ckpts, vaes = tmp_path / "ckpts", tmp_path / "vaes"
    (ckpts / "sub").mkdir(parents=True)
    (vaes / "nested").mkdir(parents=True)
    for path in (ckpts / "anime.safetensors", ckpts / "photo.safetensors", ckpts / "sub" / "anime.vae.pt",
                 vaes / "photo-v10.safetensors", vaes / "photo-v9.safetensors", vaes / "nested" / "sdxl.ckpt",
                 vaes / "notes.txt"):
        path.write_bytes(b"")
    return ckpts, vaes


def test_vaes_are_listed_by_file_name_in_natural_order(dirs):
    ckpts, vaes = dirs
    models = ModelManager(ckpt_dir=str(ckpts), vae_dir=str(vaes))
    assert list(models.vaes) == ["anime.vae.pt", "photo-v9.safetensors", "photo-v10.safetensors", "sdxl.ckpt"]
    assert set(models.checkpoints) == {"anime.safetensors", "photo.safetensors"}


def test_automatic_takes_the_first_vae_named_like_the_checkpoint_else_its_own(dirs):
    ckpts, vaes = dirs
    models = ModelManager(ckpt_dir=str(ckpts), vae_dir=str(vaes))
    anime, photo = models.find("anime"), models.find("photo")
    assert models.vae_for(anime, "Automatic") == ckpts / "sub" / "anime.vae.pt"
    assert models.vae_for(photo, "auto") == vaes / "photo-v9.safetensors"  # A1111's prefix match, first in order
    assert models.vae_for(photo, "None") is None
    assert models.vae_for(anime, "sdxl.ckpt") == vaes / "nested" / "sdxl.ckpt"
    with pytest.raises(ValueError, match=r"sd_vae: unknown VAE 'notes.txt'; available: Automatic, None, anime"):
        models.vae_for(anime, "notes.txt")


def test_vae_path_overrides_every_setting(dirs):
    ckpts, vaes = dirs
    forced = vaes / "nested" / "sdxl.ckpt"
    models = ModelManager(ckpt_dir=str(ckpts), vae_dir=str(vaes), vae_path=str(forced))
    for setting in ("Automatic", "None", "photo-v9.safetensors"):
        assert models.vae_for(models.find("photo"), setting) == forced
    with pytest.raises(ValueError, match="--vae-path: no such file"):
        ModelManager(ckpt_dir=str(ckpts), vae_path=str(vaes / "missing.safetensors"))
    with pytest.raises(ValueError, match="--vae-dir: not a folder"):
        ModelManager(ckpt_dir=str(ckpts), vae_dir=str(vaes / "missing"))
