"""Batch from folders with A1111's rules (``process_batch``), and the page's confinement of its folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from retouch.folder_batch import plan_folder, png_info_changes
from retouch.params import fixed_seed
from retouch.ui.actions import PageError
from retouch.ui.batch import BatchInputs, BatchRoots, _plan


def touch_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)
    return path


def test_images_are_every_image_below_the_folder_in_a1111s_walk_order(tmp_path):
    for name in ("img10.png", "img2.jpg", "sub/a.webp", "notes.txt", "img1.PNG", ".hidden/b.png"):
        touch_image(tmp_path / name) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    plan = plan_folder(tmp_path)
    assert [str(job.image.relative_to(tmp_path)) for job in plan.jobs] == [
        "img1.PNG", "img2.jpg", "img10.png", ".hidden/b.png", "sub/a.webp"]
    assert all(job.mask is None for job in plan.jobs)


def test_masks_come_from_the_mask_folder_itself_by_stem_or_a_single_one(tmp_path):
    for name in ("in/cat.png", "in/dog.png", "in/owl.png"):
        touch_image(tmp_path / name)
    for name in ("masks/cat.png", "masks/dog.jpg", "masks/deeper/owl.png"):  # a mask below the folder is not seen
        touch_image(tmp_path / name)
    plan = plan_folder(tmp_path / "in", tmp_path / "masks")
    assert [(j.image.name, j.mask.name) for j in plan.jobs] == [("cat.png", "cat.png"), ("dog.png", "dog.jpg")]
    assert [p.name for p in plan.without_mask] == ["owl.png"]  # skipped with a warning, as A1111
    single = tmp_path / "one"
    touch_image(single / "anything.png")
    assert {j.mask.name for j in plan_folder(tmp_path / "in", single).jobs} == {"anything.png"}


def test_a_folder_over_the_limit_is_refused(tmp_path):
    for i in range(4):
        touch_image(tmp_path / f"{i}.png")
    with pytest.raises(ValueError, match="more than 3 images"):
        plan_folder(tmp_path, limit=3)


def test_one_seed_for_the_whole_batch():
    assert fixed_seed(7) == 7
    drawn = fixed_seed(-1)
    assert 0 <= drawn < 4294967294 and fixed_seed(None) >= 0


def test_png_info_appends_prompts_and_replaces_the_chosen_values():
    text = "a fox\nNegative prompt: blur\nSteps: 9, Sampler: Euler a, CFG scale: 4.5, Seed: 11, Model hash: abc123"
    changes = png_info_changes(text, ["Prompt", "Negative prompt", "Steps", "Seed", "Model hash"], "art", "")
    assert changes == {"prompt": "art a fox", "negative_prompt": " blur", "steps": 9, "seed": 11,
                       "sd_model_checkpoint": "abc123"}  # A1111 joins with a space (not stripped)
    assert png_info_changes(None, ["Prompt"], "art", "") == {}
    with pytest.raises(ValueError, match="Steps"):
        png_info_changes("x\nSteps: many, Sampler: Euler, Seed: 1", ["Steps"], "", "")


def test_the_pages_batch_folders_stay_below_the_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch_image(root / "in" / "a.png")
    touch_image(outside / "secret.png")
    (root / "escape").symlink_to(outside)
    (root / "in" / "linked.png").symlink_to(outside / "secret.png")
    roots = BatchRoots((str(root),))
    assert roots.folder("in", "Input directory") == (root / "in").resolve()
    assert roots.folder(str(root / "in"), "Input directory") == (root / "in").resolve()
    for name in (str(outside), "../outside", "escape", "/etc", "in/../../outside"):
        with pytest.raises(PageError, match="is not a folder below this server's batch folders") as refused:
            roots.folder(name, "Input directory")
        assert str(tmp_path) not in str(refused.value).replace(name, "")  # the server's paths are not named
    plan, out = _plan(roots, BatchInputs(input_dir="in", output_dir="new/out"))
    assert [j.image.name for j in plan.jobs] == ["a.png"]  # the link leading out is not followed
    assert out == (root / "new" / "out").resolve() and out.is_dir()
    with pytest.raises(PageError):
        _plan(roots, BatchInputs(input_dir="in", output_dir="../made-outside"))
    assert not (tmp_path / "made-outside").exists()


def test_without_batch_roots_the_batch_tab_is_off(tmp_path):
    with pytest.raises(PageError, match="off on this server"):
        BatchRoots(()).folder(str(tmp_path), "Input directory")
