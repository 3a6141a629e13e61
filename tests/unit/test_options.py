"""Options: A1111 names and defaults, validated overrides, no globals."""

import pytest

from retouch import Options


def test_defaults_are_a1111s():
    o = Options()
    assert (o.emphasis, o.comma_padding_backtrack, o.CLIP_stop_at_last_layers) == ("Original", 20, 1)
    assert (o.randn_source, o.eta_noise_seed_delta, o.img2img_fix_steps) == ("GPU", 0, False)
    assert (o.initial_noise_multiplier, o.inpainting_mask_weight, o.overlay_inpaint) == (1.0, 1.0, True)
    assert o.img2img_background_color == "#ffffff" and o.batch_cond_uncond is True


def test_overrides_return_a_copy_and_leave_the_original_alone():
    base = Options()
    job = base.with_overrides({"CLIP_stop_at_last_layers": 2, "randn_source": "CPU"})
    assert (job.CLIP_stop_at_last_layers, job.randn_source) == (2, "CPU")
    assert (base.CLIP_stop_at_last_layers, base.randn_source) == (1, "GPU")


def test_a_jobs_overrides_are_recorded_and_settings_are_not():
    """A1111 reads ``"token_merging_ratio" in p.override_settings``: which names a job overrode is part of its
    options; settings changed for good (``POST /sdapi/v1/options``, the Settings tab) are not overrides."""
    settings = Options().with_settings({"token_merging_ratio": 0.2, "show_progress_grid": False})
    assert settings.token_merging_ratio == 0.2 and settings.inert["show_progress_grid"] is False
    assert settings.overridden == frozenset()
    job = settings.with_overrides({"eta_ancestral": 0.5}).with_overrides({"show_progress_grid": True})
    assert job.overridden == {"eta_ancestral", "show_progress_grid"}
    assert job.with_overrides(None).overridden == job.overridden
    kept = job.settings()  # override_settings_restore_afterwards: false keeps the values, as settings
    assert (kept.eta_ancestral, kept.overridden) == (0.5, frozenset())
    assert job.with_settings({"eta_ancestral": 1.0}).overridden == frozenset()
    assert kept == job  # which names were overridden is not part of the options' values


def test_override_values_are_coerced_like_json_numbers():
    o = Options().with_overrides({"eta_ancestral": 1, "comma_padding_backtrack": 10.0, "img2img_fix_steps": 1})
    assert o.eta_ancestral == 1.0 and isinstance(o.eta_ancestral, float)
    assert o.comma_padding_backtrack == 10 and o.img2img_fix_steps is True


@pytest.mark.parametrize(("name", "value", "message"), [
    ("emphasis", "Loud", "emphasis must be one of"),
    ("CLIP_stop_at_last_layers", 13, "CLIP_stop_at_last_layers must be <= 12"),
    ("CLIP_stop_at_last_layers", 1.5, "must be an integer"),
    ("randn_source", 3, "randn_source must be a string"),
    ("img2img_fix_steps", "yes", "must be true or false"),
    ("initial_noise_multiplier", float("nan"), "finite number"),
    ("comma_padding_backtrack", -1, ">= 0"),
    ("eta_noise_seed_delta", None, "must not be null"),
])
def test_bad_values_name_the_option(name, value, message):
    with pytest.raises(ValueError, match=message):
        Options().with_overrides({name: value})


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="unknown option 'no_such_option'"):
        Options().with_overrides({"no_such_option": 1})
    with pytest.raises(ValueError, match="unknown option 'no_such_option'"):
        Options().with_settings({"no_such_option": 1})


def test_a1111_options_without_effect_are_accepted_and_listed():
    o = Options().with_overrides({"show_progress_grid": False, "CLIP_stop_at_last_layers": 2})
    assert o.inert["show_progress_grid"] is False
    listed = o.as_dict()
    assert listed["show_progress_grid"] is False and listed["CLIP_stop_at_last_layers"] == 2
    assert listed["jpeg_quality"] == 80 and "sd_checkpoint_hash" not in listed
    assert len(listed) > 300


def test_options_are_immutable():
    with pytest.raises(AttributeError):
        Options().emphasis = "None"
