"""Textual-inversion embeddings: file layouts, the database, and their place in prompt chunks."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from retouch.models.text_encoder import CHUNK_LENGTH, encode_texts, tokenize_line
from retouch.networks.activation import ti_hashes
from retouch.networks.embeddings import EmbeddingDatabase, read_embedding
from retouch.options import Options

WIDTH = 32  # the bundled tiny model's text encoder


def a1111_pt(path, vectors, step=100):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": path.stem, "step": step,
                "sd_checkpoint": "abc", "sd_checkpoint_name": "model"}, path)
    return path


@pytest.fixture()
def folder(tmp_path):
    a1111_pt(tmp_path / "Zeta-style.pt", torch.randn(2, WIDTH))
    torch.save({"<concept>": torch.randn(WIDTH)}, tmp_path / "concept.bin")  # diffusers concept, 1-D
    save_file({"emb_params": torch.randn(3, WIDTH)}, str(tmp_path / "alpha.safetensors"))
    a1111_pt(tmp_path / "wide.pt", torch.randn(1, 768))
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(tmp_path / "xl.safetensors"))
    (tmp_path / "broken.pt").write_bytes(b"\x80\x04not a pickle at all")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_layouts_and_what_is_skipped(folder, bundled_tiny):
    db = EmbeddingDatabase(folder, WIDTH, bundled_tiny.text_encoder.tokenize)
    assert list(db.loaded) == ["alpha", "concept", "Zeta-style"]  # sorted without case, as A1111 lists them
    assert db.loaded["concept"].count == 1 and db.loaded["alpha"].count == 3
    assert db.loaded["Zeta-style"].as_api() == {"step": 100, "sd_checkpoint": "abc", "sd_checkpoint_name": "model",
                                               "shape": WIDTH, "vectors": 2}
    assert sorted(db.skipped) == ["wide", "xl"]
    assert db.skipped["xl"].width == 768 + 1280
    assert list(db.problems) == [str(folder / "broken.pt")]  # an empty file is not an embedding at all


def test_short_hash_is_the_file_sha256(folder, bundled_tiny):
    db = EmbeddingDatabase(folder, WIDTH, bundled_tiny.text_encoder.tokenize)
    expected = hashlib.sha256((folder / "alpha.safetensors").read_bytes()).hexdigest()[:12]
    assert db.loaded["alpha"].short_hash == expected


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"string_to_param": {"*": Evil()}}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused to load"):
        read_embedding(tmp_path / "evil.pt")


def test_rescan_only_when_the_folder_changed(folder, bundled_tiny):
    db = EmbeddingDatabase(folder, WIDTH, bundled_tiny.text_encoder.tokenize)
    before = db.loaded
    db.check_for_changes()
    assert db.loaded is before
    a1111_pt(folder / "newcomer.pt", torch.randn(1, WIDTH))
    db.check_for_changes()
    assert "newcomer" in db.loaded


def test_longest_name_wins(tmp_path, bundled_tiny):
    a1111_pt(tmp_path / "red.pt", torch.randn(1, WIDTH))
    a1111_pt(tmp_path / "red-cat.pt", torch.randn(4, WIDTH))
    encoder = bundled_tiny.text_encoder
    db = EmbeddingDatabase(tmp_path, WIDTH, encoder.tokenize)
    tokens = encoder.tokenize(["a red-cat and a red dog"])[0]
    found = [db.find_at(tokens, i) for i in range(len(tokens))]
    names = [(f[0].name, f[1]) for f in found if f is not None]
    assert names == [("red-cat", 3), ("red", 1)]  # where "red-cat" starts, the longer name is found


def test_an_embedding_that_does_not_fit_starts_a_new_chunk(tmp_path, bundled_tiny):
    a1111_pt(tmp_path / "triple.pt", torch.randn(3, WIDTH))
    encoder = bundled_tiny.text_encoder
    db = EmbeddingDatabase(tmp_path, WIDTH, encoder.tokenize)
    prompt = " ".join(["cat"] * 73) + " triple"
    chunks, count = tokenize_line(encoder, prompt, Options(comma_padding_backtrack=0), db.find_at)
    assert len(chunks) == 2
    assert chunks[0].fixes == [] and chunks[0].tokens[74:] == [encoder.tokenizer.eos_token_id] * 3
    assert [(offset, e.name) for offset, e in chunks[1].fixes] == [(0, "triple")]
    assert chunks[1].tokens[1:4] == [0, 0, 0] and count == CHUNK_LENGTH + 3
    fits = " ".join(["cat"] * 72) + " triple"
    chunks, _ = tokenize_line(encoder, fits, Options(), db.find_at)
    assert len(chunks) == 1 and chunks[0].fixes[0][0] == 72


def test_vectors_take_the_place_of_token_embeddings(tmp_path, bundled_tiny):
    """An embedding holding the token embedding of "dog" encodes exactly as the word does."""
    encoder = bundled_tiny.text_encoder
    dog = encoder.tokenize(["dog"])[0]
    assert len(dog) == 1
    vectors = encoder.transformer.embeddings.token_embedding(torch.tensor(dog)).detach().clone()
    a1111_pt(tmp_path / "mydog.pt", vectors)
    db = EmbeddingDatabase(tmp_path, WIDTH, encoder.tokenize)
    used: dict = {}
    with_embedding = encode_texts(encoder, ["a (mydog:1.2) on a mat"], Options(), db.find_at, used)
    with_word = encode_texts(encoder, ["a (dog:1.2) on a mat"], Options(), db.find_at)
    assert torch.equal(with_embedding, with_word)
    assert list(used) == ["mydog"]
    plain = encode_texts(encoder, ["a (mydog:1.2) on a mat"], Options())
    assert not torch.equal(plain, with_word)


def test_ti_hashes_accumulate_as_a1111_writes_them(folder, bundled_tiny):
    db = EmbeddingDatabase(folder, WIDTH, bundled_tiny.text_encoder.tokenize)
    alpha, zeta = db.loaded["alpha"], db.loaded["Zeta-style"]
    first = ti_hashes(None, [alpha])
    assert first == f"alpha: {alpha.short_hash}"
    assert ti_hashes(first, [zeta]) == f"Zeta-style: {zeta.short_hash}, alpha: {alpha.short_hash}"
    assert ti_hashes(first, []) == first
