"""The frozen UNet's package keys and the package folder's budget (retouch.models.frozen), without compiling."""

from __future__ import annotations

import os

import pytest
import torch

from retouch.models import frozen


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.GroupNorm(2, 8))


SIGNATURE = (False, ((2, 4, 8, 8), "torch.float32", False, True))


def test_the_key_is_the_weights_contents_not_the_module_object():
    a, b = small_net(), small_net()
    assert a is not b
    key = frozen.package_key(a, frozen.weights_digest(a), SIGNATURE)
    assert frozen.package_key(b, frozen.weights_digest(b), SIGNATURE) == key
    assert frozen.package_key(b, frozen.weights_digest(b.to(memory_format=torch.channels_last)), SIGNATURE) == key
    with torch.no_grad():
        b[0].weight[0, 0, 0, 0] += 1e-3  # one weight changed
    assert frozen.package_key(b, frozen.weights_digest(b), SIGNATURE) != key
    assert frozen.package_key(small_net(1), frozen.weights_digest(small_net(1)), SIGNATURE) != key


def test_the_key_changes_with_the_input_signature_and_the_attention_upcast():
    net = small_net()
    digest = frozen.weights_digest(net)
    keys = {frozen.package_key(net, digest, signature)
            for signature in (SIGNATURE, (True, *SIGNATURE[1:]), (False, ((4, 4, 8, 8), "torch.float32", False, True)),
                              (False, ((2, 4, 8, 8), "torch.bfloat16", False, True)),
                              (False, ((2, 4, 8, 8), "torch.float32", True, False)))}
    assert len(keys) == 5


def test_the_weights_digest_covers_dtype_and_names():
    net = small_net()
    digest = frozen.weights_digest(net)
    assert frozen.weights_digest(small_net().to(torch.bfloat16)) != digest
    renamed = torch.nn.Sequential()
    renamed.add_module("conv", small_net()[0])
    renamed.add_module("norm", small_net()[1])
    assert frozen.weights_digest(renamed) != digest


def test_the_package_folder_keeps_within_its_budget_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv(frozen.BUDGET_ENV, str(2.5 / 1024))  # 2.5 MiB
    for age, name in enumerate(("newest", "second", "third", "oldest")):
        path = tmp_path / f"{name}.pt2"
        path.write_bytes(b"x" * 2**20)  # 1 MiB each
        os.utime(path, (1_000_000 - age * 100, 1_000_000 - age * 100))
    frozen.prune(tmp_path, keep=tmp_path / "oldest.pt2")  # the one being loaded is never deleted
    assert sorted(p.stem for p in tmp_path.glob("*.pt2")) == ["newest", "oldest"]


def test_a_bad_package_budget_is_refused_naming_the_variable(monkeypatch):
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv(frozen.BUDGET_ENV, bad)
        with pytest.raises(ValueError, match=f"RETOUCH_FROZEN_CACHE_GB .*{bad}"):
            frozen.cache_budget()
    monkeypatch.setenv(frozen.BUDGET_ENV, "0.5")
    assert frozen.cache_budget() == 2**29


def test_a_live_package_key_is_the_weights_layout_not_their_contents():
    """Live packages take the model's own weights at run time: any checkpoint of the same architecture, dtype and
    memory layout shares one; frozen and live packages never share a key."""
    a, b = small_net(0), small_net(1)
    key = frozen.package_key(a, frozen.weights_layout(a), SIGNATURE, freeze=False)
    assert frozen.package_key(b, frozen.weights_layout(b), SIGNATURE, freeze=False) == key
    for other in (a.to(torch.bfloat16), small_net(0).to(memory_format=torch.channels_last)):
        assert frozen.package_key(other, frozen.weights_layout(other), SIGNATURE, freeze=False) != key
    assert frozen.package_key(a, frozen.weights_layout(a), SIGNATURE, freeze=True) != key
