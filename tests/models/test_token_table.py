"""The token-embedding table stays in a safetensors checkpoint: lookups read and cast only the rows a prompt uses,
with exactly the values a loaded table would give (fp32, fp16 and bf16 files, any compute dtype)."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from retouch import load_model
from retouch.models import CheckpointError
from retouch.models.token_table import FileTokenEmbedding

CLIP_TABLE = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"


@pytest.fixture(scope="module")
def tiny_state(bundled_tiny):
    return load_file(bundled_tiny.path)


@pytest.fixture
def folder(bundled_tiny, tmp_path):
    """A folder where ``m.safetensors`` / ``m.ckpt`` load as the bundled tiny model (its yaml and CLIP beside)."""
    (tmp_path / "m.yaml").write_text(bundled_tiny.path.with_suffix(".yaml").read_text())
    (tmp_path / "tiny-clip").symlink_to(bundled_tiny.path.parent / "tiny-clip")
    return tmp_path


def _written(state, path, dtype=None):
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, path)
    return path


def _table(model):
    return model.text_encoder.transformer.embeddings.token_embedding


@pytest.mark.parametrize(("file_dtype", "dtype"), [(None, torch.float32), (torch.float16, torch.float32),
                                                   (torch.bfloat16, torch.float32), (torch.float16, torch.bfloat16)])
def test_lookups_equal_the_loaded_table_and_read_only_their_rows(tiny_state, folder, file_dtype, dtype):
    path = _written(tiny_state, folder / "m.safetensors", file_dtype)
    model = load_model(path, dtype=dtype)
    table = _table(model)
    assert isinstance(table, FileTokenEmbedding) and not list(table.parameters())
    stored = load_file(path)[CLIP_TABLE].to(dtype)
    ids = torch.tensor([[49406, 320, 1929, 320, 49407], [49406, 49407, 49407, 0, 49407]])
    out = table(ids)
    assert out.dtype == dtype and out.shape == (2, 5, stored.shape[1])
    assert torch.equal(out, stored[ids])
    assert len(table._rows) == len(set(ids.flatten().tolist()))  # the rows used, nothing else
    assert torch.equal(model.text_encoder.transformer.state_dict()["embeddings.token_embedding.weight"], stored)


def test_a_prompt_encodes_as_with_the_whole_table_in_memory(bundled_tiny, folder, tiny_state):
    """A pickle checkpoint loads the table as any weight: the same file as safetensors encodes identically."""
    torch.save({"state_dict": tiny_state}, folder / "m.ckpt")
    eager = load_model(folder / "m.ckpt")
    assert isinstance(_table(eager), torch.nn.Embedding)
    tokens = torch.tensor([[49406, *bundled_tiny.text_encoder.tokenize(["a red cat on a mat"])[0]] + [49407] * 70])
    assert torch.equal(bundled_tiny.text_encoder.encode(tokens), eager.text_encoder.encode(tokens))


def test_a_file_changed_on_disk_is_an_error_and_a_replaced_one_is_not_read(tiny_state, folder):
    path = _written(tiny_state, folder / "m.safetensors")
    model = load_model(path)
    first = _table(model)(torch.tensor([1, 2]))
    replacement = _written({k: v * 2 if k == CLIP_TABLE else v for k, v in tiny_state.items()}, folder / "n.st")
    os.replace(replacement, path)  # a new file under the same name: the loaded model keeps reading its own
    assert torch.equal(_table(model)(torch.tensor([1, 2, 3]))[:2], first)
    with open(path, "r+b") as f:  # this file rewritten in place, under the model that reads it
        model = load_model(path)
        f.seek(-4, os.SEEK_END)
        f.write(b"\0\0\0\0")
    os.utime(path, ns=(1, 1))
    with pytest.raises(CheckpointError, match="m.safetensors: the file changed on disk since the model was loaded"):
        _table(model)(torch.tensor([5]))


def test_ids_out_of_range_fail_as_nn_embedding(bundled_tiny):
    with pytest.raises(IndexError, match="index out of range"):
        _table(bundled_tiny)(torch.tensor([49408]))
    with pytest.raises(IndexError, match="index out of range"):
        _table(bundled_tiny)(torch.tensor([-1]))
