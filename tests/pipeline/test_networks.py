"""LoRA-family networks and embeddings through generate(), on the bundled tiny model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from retouch import load_model
from retouch.networks import loading, patching
from retouch.networks.synthetic import write_random_network
from retouch.options import Options
from retouch.params import Img2ImgParams
from retouch.pipeline import generate
from tests.pipeline.helpers import pixels, source_image


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("networks")
    loras, embeddings = base / "Lora", base / "embeddings"
    loras.mkdir()
    embeddings.mkdir()
    layers = load_model("tiny").extra_networks.layers
    write_random_network(loras / "style.safetensors", layers, rank=4, scale=0.3)
    write_random_network(loras / "other_name.safetensors", layers, rank=2, scale=0.3, seed=1,
                         metadata={"ss_output_name": "fancy"})
    write_random_network(loras / "hada.safetensors", layers, kind="loha", scale=0.3)
    write_random_network(loras / "kron.safetensors", layers, kind="lokr", scale=0.3)
    torch.save({"string_to_param": {"*": torch.randn(2, 32) * 0.5}, "name": "x", "step": 1},
               embeddings / "emb-two.pt")
    return loras, embeddings


@pytest.fixture(scope="module")
def model(folders):
    return load_model("tiny", lora_dir=folders[0], embeddings_dir=folders[1])


def run(model, prompt="a cat", negative="", options=None, **kw):
    kw = {"seed": 11, **kw}
    params = Img2ImgParams(prompt=prompt, negative_prompt=negative, init_images=[source_image()], width=64, height=64,
                           steps=6, denoising_strength=0.6, sampler_name="Euler a", **kw)
    return generate(params, model, options=options or Options())


def weights(model):
    return {f"{part}.{k}": v.detach().clone() for part, net in (("unet", model.unet),
                                                                ("te", model.text_encoder.transformer))
            for k, v in net.state_dict().items()}


def test_a_lora_changes_the_picture_and_the_model_is_bit_identical_afterwards(model):
    before = weights(model)
    plain = run(model)
    with_lora = run(model, "a cat <lora:style:0.8>")
    assert np.abs(pixels(with_lora.images[0]) - pixels(plain.images[0])).max() > 10
    after = weights(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(pixels(run(model).images[0]), pixels(plain.images[0]))  # as on a fresh model


def test_the_same_networks_again_are_neither_read_nor_computed_again(model, monkeypatch):
    reads, computations = [], []
    real_read, real_patch = loading.read_state_dict, patching._patched_weights
    monkeypatch.setattr(loading, "read_state_dict", lambda path: reads.append(path) or real_read(path))
    monkeypatch.setattr(patching, "_patched_weights",
                        lambda *a: computations.append(1) or real_patch(*a))
    model.extra_networks.patcher.clear()
    first = run(model, "a dog <lora:kron:0.7>")
    second = run(model, "a dog <lora:kron:0.7>")
    assert len(computations) == 1 and len(reads) <= 1
    assert np.array_equal(pixels(first.images[0]), pixels(second.images[0]))
    run(model, "a dog <lora:kron:0.6>")  # other weights: computed again, file not read again
    assert len(computations) == 2 and len(reads) <= 1


def test_weight_syntax(model):
    def image(prompt):
        return pixels(run(model, prompt).images[0])

    assert np.array_equal(image("a cat <lora:style:te=0.5>"), image("a cat <lora:style:0.5:0.5>"))
    assert np.array_equal(image("a cat <lora:style:0.5>"), image("a cat <lora:style:0.5:0.5>"))
    assert np.array_equal(image("a cat <lora:style:1:0:unet=0.4>"), image("a cat <lora:style:1:0.4>"))
    assert np.array_equal(image("a cat <lora:style:0:0>"), image("a cat"))
    assert not np.array_equal(image("a cat <lora:style:0:1>"), image("a cat <lora:style:1:1>"))
    assert not np.array_equal(image("a cat <lora:style:-0.7>"), image("a cat"))
    assert np.array_equal(image("a cat <lyco:hada:0.9>"), image("a cat <lora:hada:0.9>"))


def test_a_network_named_twice_is_applied_twice_at_its_last_weight(model):
    twice = pixels(run(model, "a cat <lora:style:0.2> <lora:style:0.5>").images[0])
    assert np.array_equal(twice, pixels(run(model, "a cat <lora:style:0.5> <lora:style:0.5>").images[0]))
    assert not np.array_equal(twice, pixels(run(model, "a cat <lora:style:0.5>").images[0]))


def test_alias_and_lora_hashes(model, folders):
    result = run(model, "a cat <lora:fancy:1> <lora:style:0.5>")
    addnet = {}
    for name in ("other_name", "style"):
        data = (folders[0] / f"{name}.safetensors").read_bytes()
        header = 8 + int.from_bytes(data[:8], "little")
        addnet[name] = hashlib.sha256(data[header:]).hexdigest()[:12]
    assert f'Lora hashes: "fancy: {addnet["other_name"]}, style: {addnet["style"]}"' in result.infotexts[0]
    assert model.loras.aliases == {"fancy": "other_name"}
    by_name = pixels(run(model, "a cat <lora:other_name:1> <lora:style:0.5>").images[0])
    assert np.array_equal(pixels(result.images[0]), by_name)


def test_negative_prompt_tags_are_words(model):
    tagged = run(model, negative="<lora:style:1>")
    assert "Lora hashes" not in tagged.infotexts[0]
    assert "Negative prompt: <lora:style:1>" in tagged.infotexts[0]
    assert not np.array_equal(pixels(tagged.images[0]), pixels(run(model).images[0]))


def test_a_missing_network_is_reported_and_the_job_runs(model):
    result = run(model, "a cat <lora:nothere:1> <lora:gone:0.5>")
    assert "Lora not found: nothere, gone" in result.comments
    assert np.array_equal(pixels(result.images[0]), pixels(run(model, "a cat").images[0]))
    assert "Lora hashes" not in result.infotexts[0]


def test_names_not_found_rescan_the_folder_once_per_job(model, monkeypatch):
    scans = []
    real = type(model.loras).refresh
    monkeypatch.setattr(type(model.loras), "refresh", lambda self: (scans.append(1), real(self)))
    result = run(model, "a cat " + "".join(f"<lora:gone{i}:1>" for i in range(40)))
    assert len(scans) == 1 and "Lora not found: gone0, gone1" in result.comments[0]


@pytest.mark.parametrize("prompt, message", [
    ("<lora:style:abc>", "text encoder weight in <lora:style:abc> must be a number"),
    ("<lora:style:1:1:x>", "dyn dimension"),
    ("<lora:te=1>", "names no network"),
    ("<lora:style:nan>", "text encoder weight in <lora:style:nan> must be a finite number"),
    ("<lora:style:1:inf>", "UNet weight in <lora:style:1:inf> must be a finite number"),
    ("<lora:style:te=-Infinity>", "must be a finite number"),
])
def test_malformed_tags_are_bad_input(model, prompt, message):
    with pytest.raises(ValueError, match=message):
        run(model, prompt)


def test_broken_files_fail_before_any_work(model, folders, tmp_path):
    (folders[0] / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
    with pytest.raises(ValueError, match=r"network 'broken'.*broken\.safetensors"):
        run(model, "a cat <lora:broken:1>")
    from safetensors.torch import save_file

    save_file({"lora_unet_nowhere_to_q.lora_down.weight": torch.zeros(1, 4),
               "lora_unet_nowhere_to_q.lora_up.weight": torch.zeros(4, 1)}, str(folders[0] / "alien.safetensors"))
    control_steps = []
    with pytest.raises(ValueError, match="match nothing in this model.*lora_unet_nowhere_to_q"):
        params = Img2ImgParams(prompt=["a", "b <lora:alien:1>"], init_images=[source_image()], width=64, height=64,
                               steps=3, n_iter=2)
        from retouch.control import JobControl

        generate(params, model, control=JobControl(on_step=lambda c, d: control_steps.append(d["i"])))
    assert control_steps == []  # the second batch's network failed before the first batch ran
    for name in ("broken", "alien"):
        (folders[0] / f"{name}.safetensors").unlink()


def test_each_batch_applies_its_own_first_prompts_networks(model):
    mixed = run(model, ["a cat <lora:style:1>", "a cat"], n_iter=2, seed=[11, 11], options=Options(return_grid=False))
    assert np.array_equal(pixels(mixed.images[0]), pixels(run(model, "a cat <lora:style:1>").images[0]))
    assert np.array_equal(pixels(mixed.images[1]), pixels(run(model, "a cat").images[0]))


def test_disable_extra_networks_and_the_sd_lora_option(model):
    disabled = run(model, "a cat <lora:style:1>", disable_extra_networks=True)
    assert np.array_equal(pixels(disabled.images[0]), pixels(run(model).images[0]))
    assert "Lora hashes" not in disabled.infotexts[0]
    added = run(model, "a cat", options=Options(sd_lora="style"))
    assert added.infotexts[0].startswith("a cat<lora:style:1.0>\n")
    assert np.array_equal(pixels(added.images[0]), pixels(run(model, "a cat <lora:style:1.0>").images[0]))


@pytest.mark.parametrize("name", ["hada", "kron"])
def test_lycoris_formats_run_and_restore(model, name):
    before = weights(model)
    plain = pixels(run(model).images[0])
    assert not np.array_equal(pixels(run(model, f"a cat <lora:{name}:1>").images[0]), plain)
    after = weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_lora_made_for_the_4_channel_unet_works_on_the_inpainting_model(folders):
    inpainting = load_model("tiny-inpainting", lora_dir=folders[0])
    mask = source_image().convert("L").point(lambda v: 255 if v > 128 else 0)
    params = dict(prompt="a cat <lora:style:1>", init_images=[source_image()], image_mask=mask, width=64, height=64,
                  steps=4, seed=3)
    with_lora = generate(Img2ImgParams(**params), inpainting)
    without = generate(Img2ImgParams(**{**params, "prompt": "a cat"}), inpainting)
    assert "Lora hashes" in with_lora.infotexts[0]
    assert not np.array_equal(pixels(with_lora.images[0]), pixels(without.images[0]))


def test_embeddings_in_prompt_and_negative_prompt(model, folders):
    digest = hashlib.sha256((folders[1] / "emb-two.pt").read_bytes()).hexdigest()[:12]
    result = run(model, "a (emb-two:1.2) cat", negative="emb-two, blurry")
    # negative prompts are encoded first: their entry comes last (A1111 prepends each encoding's entries)
    assert f'TI hashes: "emb-two: {digest}, emb-two: {digest}"' in result.infotexts[0]
    assert not np.array_equal(pixels(result.images[0]),
                              pixels(run(model, "a (emb-two:1.2) cat", negative="blurry").images[0]))
    assert "TI hashes" not in run(model, "a cat", options=Options(textual_inversion_add_hashes_to_infotext=True)
                                  ).infotexts[0]
