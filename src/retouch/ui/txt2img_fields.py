"""The txt2img tab's parameters as the page holds them, and the A1111 API request they make (no Gradio here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retouch.infotext import paste_values
from retouch.ui.actions import _PASTED, refiner_fields

SAME_SAMPLER, SAME_SCHEDULER, SAME_CHECKPOINT = "Use same sampler", "Use same scheduler", "Use same checkpoint"
_HIRES_PASTED = ("hr_scale", "hr_resize_x", "hr_resize_y", "hr_second_pass_steps", "hr_upscaler", "hr_sampler_name",
                 "hr_scheduler", "hr_checkpoint_name", "hr_prompt", "hr_negative_prompt", "enable_hr")


@dataclass(frozen=True)
class Txt2ImgFields:
    prompt: str = ""
    negative_prompt: str = ""
    steps: int = 20
    sampler_name: str = "DPM++ 2M"
    scheduler: str = "Automatic"
    width: int = 512
    height: int = 512
    batch_count: int = 1
    batch_size: int = 1
    cfg_scale: float = 7.0
    seed: int = -1
    variation: bool = False
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    styles: tuple[str, ...] = ()
    enable_hr: bool = False  # A1111's "Hires. fix" accordion
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0
    denoising_strength: float = 0.7
    hr_scale: float = 2.0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str = SAME_CHECKPOINT
    hr_sampler_name: str = SAME_SAMPLER
    hr_scheduler: str = SAME_SCHEDULER
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    refiner: bool = False
    refiner_checkpoint: str = ""
    refiner_switch_at: float = 0.8

    @classmethod
    def from_page(cls, values: dict[str, Any]) -> Txt2ImgFields:
        """An emptied number box means its default (an empty Seed is -1, random)."""
        defaults = cls()
        cleaned = {name: getattr(defaults, name) if value is None else value for name, value in values.items()}
        if "styles" in cleaned:
            cleaned["styles"] = tuple(cleaned["styles"] or ())
        return cls(**cleaned)

    def request(self, task_id: str) -> dict[str, Any]:
        """The ``POST /sdapi/v1/txt2img`` request (A1111's ``txt2img()`` arguments)."""
        request: dict[str, Any] = {
            "prompt": self.prompt, "negative_prompt": self.negative_prompt, "steps": int(self.steps),
            "sampler_name": self.sampler_name, "scheduler": self.scheduler, "width": int(self.width),
            "height": int(self.height), "n_iter": int(self.batch_count), "batch_size": int(self.batch_size),
            "cfg_scale": float(self.cfg_scale), "seed": int(self.seed),
            "subseed": int(self.subseed) if self.variation else -1,
            "subseed_strength": float(self.subseed_strength) if self.variation else 0.0,
            "seed_resize_from_w": int(self.seed_resize_from_w) if self.variation else 0,
            "seed_resize_from_h": int(self.seed_resize_from_h) if self.variation else 0,
            "styles": list(self.styles), "force_task_id": task_id, "save_images": True, "send_images": True,
            "enable_hr": bool(self.enable_hr), "denoising_strength": float(self.denoising_strength),
        }
        if self.enable_hr:
            request.update(
                hr_upscaler=self.hr_upscaler, hr_second_pass_steps=int(self.hr_second_pass_steps),
                hr_scale=float(self.hr_scale), hr_resize_x=int(self.hr_resize_x), hr_resize_y=int(self.hr_resize_y),
                hr_checkpoint_name=None if self.hr_checkpoint_name == SAME_CHECKPOINT else self.hr_checkpoint_name,
                hr_sampler_name=None if self.hr_sampler_name == SAME_SAMPLER else self.hr_sampler_name,
                hr_scheduler=None if self.hr_scheduler == SAME_SCHEDULER else self.hr_scheduler,
                hr_prompt=self.hr_prompt, hr_negative_prompt=self.hr_negative_prompt)
        request.update(refiner_fields(self.refiner, self.refiner_checkpoint, self.refiner_switch_at))
        return request


def txt2img_fields_from_infotext(text: str, restore_lora_names=None) -> dict[str, Any]:
    """The tab's fields an infotext sets (A1111's paste into txt2img); the others are left out."""
    prompt, negative, values, _ = paste_values(text, restore_lora_names)
    out: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    names = {f for f in Txt2ImgFields.__dataclass_fields__}
    out.update({name: values[name] for name in (*_PASTED, *_HIRES_PASTED) if name in values and name in names})
    if "subseed" in values or "seed_resize_from_w" in values:
        out["variation"] = True
    if "refiner_checkpoint" in values:
        out.update(refiner=True, refiner_checkpoint=values["refiner_checkpoint"])
        if "refiner_switch_at" in values:
            out["refiner_switch_at"] = values["refiner_switch_at"]
    return out
