"""The axes of A1111's X/Y/Z plot for img2img (``scripts/xyz_grid.py``, v1.10.1): their labels in A1111's order
(the API passes an axis as its index in this list), how a value changes a cell's job, how it is labelled in the
legend, and how an axis's text becomes its values (lists, ranges ``1-5``, ``1-10 (+2)``, ``1-10 [5]``)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import numpy as np

from retouch.params import GenerationParams


@dataclass
class Cell:
    """One cell's job as the axes change it: its parameters, its option overrides, and the checkpoint and VAE it
    runs on (None: the job's own)."""

    params: GenerationParams
    overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    vae: str | None = None

    def set(self, **changes: Any) -> None:
        self.params = dataclasses.replace(self.params, **changes)


Apply = Callable[[Cell, Any, Sequence[Any]], None]


def _field(name: str) -> Apply:
    return lambda cell, x, xs: cell.set(**{name: x})


def _option(name: str, boolean: bool = False) -> Apply:
    def apply(cell: Cell, x: Any, xs: Sequence[Any]) -> None:
        cell.overrides[name] = (x.lower() == "true") if boolean else x
    return apply


def _prompt_sr(cell: Cell, x: str, xs: Sequence[str]) -> None:
    prompt, negative = _text(cell.params.prompt), _text(cell.params.negative_prompt or "")
    if xs[0] not in prompt and xs[0] not in negative:
        raise ValueError(f"X/Y/Z plot: Prompt S/R did not find {xs[0]!r} in the prompt or the negative prompt")
    cell.set(prompt=prompt.replace(xs[0], x), negative_prompt=negative.replace(xs[0], x))


def _text(prompt: Any) -> str:
    if isinstance(prompt, list):
        raise ValueError("X/Y/Z plot: Prompt S/R and Prompt order need one prompt, not a list")
    return str(prompt)


def _prompt_order(cell: Cell, x: Sequence[str], xs: Sequence[Any]) -> None:
    """The prompt with the tokens of ``x`` put in that order, where the tokens were (A1111's ``apply_order``)."""
    rest = _text(cell.params.prompt)
    parts = []
    for _, token in sorted(((rest.find(token), token) for token in x), key=lambda t: t[0]):
        n = rest.find(token)
        parts.append(rest[:n])
        rest = rest[n + len(token):]
    cell.set(prompt="".join(part + x[i] for i, part in enumerate(parts)) + rest)


def _checkpoint(cell: Cell, x: str, xs: Sequence[Any]) -> None:
    cell.checkpoint = x


def _vae(cell: Cell, x: str, xs: Sequence[Any]) -> None:
    name = x.strip()
    cell.vae = "Automatic" if name.lower() in ("auto", "automatic") else "None" if name.lower() == "none" else name


def _styles(cell: Cell, x: str, xs: Sequence[Any]) -> None:
    cell.set(styles=[*cell.params.styles, *x.split(",")])


def _uni_pc_order(cell: Cell, x: int, xs: Sequence[Any]) -> None:
    cell.overrides["uni_pc_order"] = min(x, cell.params.steps - 1)


def _size(cell: Cell, x: str, xs: Sequence[Any]) -> None:
    width, _, height = x.partition("x")
    try:
        cell.set(width=int(width.strip()), height=int(height.strip()))
    except ValueError:
        raise ValueError(f"X/Y/Z plot: Size must be WIDTHxHEIGHT, got {x!r}") from None


def _unsupported(label: str, off: Sequence[str]) -> Apply:
    def apply(cell: Cell, x: Any, xs: Sequence[Any]) -> None:
        if str(x).strip().lower() not in off:
            raise ValueError(f"X/Y/Z plot: the {label} axis is not supported by retouch (got {x!r}); only "
                             f"{' / '.join(off)} is")
    return apply


def _nothing(cell: Cell, x: Any, xs: Sequence[Any]) -> None:
    pass


def label_value(axis: Axis, x: Any) -> Any:
    """A1111's ``format_value_add_label``: ``Label: value`` (floats rounded to 8 places)."""
    return f"{axis.label}: {round(x, 8) if type(x) is float else x}"


def plain_value(axis: Axis, x: Any) -> Any:
    return round(x, 8) if type(x) is float else x


def joined_value(axis: Axis, x: Any) -> Any:
    return ", ".join(x)


def no_value(axis: Axis, x: Any) -> Any:
    return ""


def file_name(axis: Axis, x: Any) -> Any:
    return str(x).replace("\\", "/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Axis:
    label: str
    kind: str  # "int", "float", "str" or "permutations"
    apply: Apply
    format: Callable[[Axis, Any], Any] = label_value
    cost: float = 0.0  # A1111 runs the costliest axis in the outer loop (a checkpoint is loaded once)
    choices: bool = False  # the page offers its values in a dropdown (the API passes them as a list)
    check: str | None = None  # what to look the values up in: "checkpoint", "checkpoint_or_none", "vae"


BOOL_CHOICES = ("False", "True")

# A1111 v1.10.1's axis_options as the img2img tab lists them (the txt2img-only ones left out), in order
AXES: tuple[Axis, ...] = (
    Axis("Nothing", "str", _nothing, no_value),
    Axis("Seed", "int", _field("seed")),
    Axis("Var. seed", "int", _field("subseed")),
    Axis("Var. strength", "float", _field("subseed_strength")),
    Axis("Steps", "int", _field("steps")),
    Axis("CFG Scale", "float", _field("cfg_scale")),
    Axis("Image CFG Scale", "float", _field("image_cfg_scale")),
    Axis("Prompt S/R", "str", _prompt_sr, plain_value),
    Axis("Prompt order", "permutations", _prompt_order, joined_value),
    Axis("Sampler", "str", _field("sampler_name"), plain_value, choices=True),
    Axis("Checkpoint name", "str", _checkpoint, file_name, cost=1.0, choices=True, check="checkpoint"),
    Axis("Negative Guidance minimum sigma", "float", _field("s_min_uncond")),
    Axis("Sigma Churn", "float", _field("s_churn")),
    Axis("Sigma min", "float", _field("s_tmin")),
    Axis("Sigma max", "float", _field("s_tmax")),
    Axis("Sigma noise", "float", _field("s_noise")),
    Axis("Schedule type", "str", _field("scheduler"), choices=True),
    Axis("Schedule min sigma", "float", _option("sigma_min")),
    Axis("Schedule max sigma", "float", _option("sigma_max")),
    Axis("Schedule rho", "float", _option("rho")),
    Axis("Skip Early CFG", "float", _option("skip_early_cond")),
    Axis("Beta schedule alpha", "float", _option("beta_dist_alpha")),
    Axis("Beta schedule beta", "float", _option("beta_dist_beta")),
    Axis("Eta", "float", _field("eta")),
    Axis("Clip skip", "int", _option("CLIP_stop_at_last_layers")),
    Axis("Denoising", "float", _field("denoising_strength")),
    Axis("Initial noise multiplier", "float", _option("initial_noise_multiplier")),
    Axis("Extra noise", "float", _option("img2img_extra_noise")),
    Axis("Cond. Image Mask Weight", "float", _option("inpainting_mask_weight")),
    Axis("VAE", "str", _vae, cost=0.7, choices=True, check="vae"),
    Axis("Styles", "str", _styles, choices=True),
    Axis("UniPC Order", "int", _uni_pc_order, cost=0.5),
    Axis("Face restore", "str", _unsupported("Face restore", ("false", "no", "n", "0", "none", "")), plain_value),
    Axis("Token merging ratio", "float", _option("token_merging_ratio")),
    Axis("Token merging ratio high-res", "float", _option("token_merging_ratio_hr")),
    Axis("Always discard next-to-last sigma", "str", _option("always_discard_next_to_last_sigma", boolean=True),
         choices=True),
    Axis("SGM noise multiplier", "str", _option("sgm_noise_multiplier", boolean=True), choices=True),
    Axis("Refiner checkpoint", "str", _field("refiner_checkpoint"), file_name, cost=1.0, choices=True,
         check="checkpoint_or_none"),
    Axis("Refiner switch at", "float", _field("refiner_switch_at")),
    Axis("RNG source", "str", _option("randn_source"), choices=True),
    Axis("FP8 mode", "str", _unsupported("FP8 mode", ("disable",)), cost=0.9, choices=True),
    Axis("Size", "str", _size),
)

# A1111's range patterns (their unescaped "." included)
RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RANGE_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
RANGE_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
RANGE_COUNT_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")
MAX_VALUES = 1_000  # values per axis (a range like 1-100000000 is refused, not expanded)


def csv_values(text: str) -> list[str]:
    """A1111's ``csv_string_to_list_strip``: comma-separated, quotes allowed, each value stripped."""
    return [value.strip() for row in csv.reader(StringIO(text), skipinitialspace=True) for value in row]


def csv_text(values: Sequence[str]) -> str:
    """A1111's ``list_to_csv_string``: the values as one CSV line (the infotext's ``X Values`` of a dropdown)."""
    out = StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue().strip()


def axis_values(axis: Axis, text: str, dropdown: Sequence[str], *, csv_mode: bool, raw_mode: bool,
                where: str) -> list[Any]:
    """An axis's values from its text box (or dropdown), ranges expanded and typed (``ValueError`` naming
    ``where``)."""
    if axis.label == "Nothing":
        return [0]
    if axis.choices and not csv_mode:
        values: list[Any] = list(dropdown)
    elif raw_mode and "\n" in text.strip():
        values = text.strip().split("\n")
    else:
        values = csv_values(text)
    if axis.kind == "int":
        values = _expanded(values, RANGE, RANGE_COUNT, int, where)
    elif axis.kind == "float":
        values = _expanded(values, RANGE_FLOAT, RANGE_COUNT_FLOAT, float, where)
    elif axis.kind == "permutations":
        if len(values) > 6:
            raise ValueError(f"{where}: Prompt order permutes at most 6 tokens, got {len(values)}")
        values = list(itertools.permutations(values))
    if len(values) > MAX_VALUES:
        raise ValueError(f"{where}: at most {MAX_VALUES} values, got {len(values)}")
    if axis.kind in ("int", "float"):
        kind = int if axis.kind == "int" else float
        try:
            values = [kind(v) for v in values]
        except ValueError:
            raise ValueError(f"{where}: {axis.label} takes {axis.kind} values, got {text[:80]!r}") from None
    return values


def _expanded(values: list[Any], step_range: re.Pattern, count_range: re.Pattern, kind: type, where: str) -> list:
    out: list[Any] = []
    for value in values:
        stepped, counted = step_range.fullmatch(value), count_range.fullmatch(value)
        try:
            if stepped is not None:
                out += _stepped(stepped, kind, where)
            elif counted is not None:
                start, end = kind(counted.group(1)), kind(counted.group(2))
                num = int(counted.group(3)) if counted.group(3) is not None else 1
                if num > MAX_VALUES:
                    raise ValueError(f"{where}: at most {MAX_VALUES} values, got {value!r}")
                out += [kind(x) for x in np.linspace(start=start, stop=end, num=num).tolist()]
            else:
                out.append(value)
        except ValueError as e:
            raise ValueError(str(e) if str(e).startswith(where) else f"{where}: bad range {value!r}") from None
        if len(out) > MAX_VALUES:
            raise ValueError(f"{where}: at most {MAX_VALUES} values, got more from {value!r}")
    return out


def _stepped(match: re.Match, kind: type, where: str) -> list[Any]:
    start, end = kind(match.group(1)), kind(match.group(2))
    step = kind(match.group(3)) if match.group(3) is not None else 1
    if step == 0:
        raise ValueError("range")
    if abs((end - start) / step) > MAX_VALUES:
        raise ValueError(f"{where}: at most {MAX_VALUES} values, got {match.group(0)!r}")
    if kind is int:
        return list(range(start, end + 1, step))
    return np.arange(start, end + step, step).tolist()
