"""A1111's img2img scripts (``script_name`` + ``script_args``), each a plain function over the core.

A script takes the job's validated parameters and its own arguments (parsed from A1111's positional
``script_args`` by :meth:`Script.parse`, which raises ``ValueError`` naming the argument) and runs one or more
jobs through :class:`ScriptRun` — the job's model, options, control and resources, and one shared infotext log,
as A1111's scripts call ``process_images`` on one processing object. It returns a :class:`ScriptOutcome`: the
images and infotexts A1111's API answers with, and the fields of its ``Processed`` that differ from the last
job's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retouch.control import Interrupted, JobControl
from retouch.models.model import Model
from retouch.options import Options
from retouch.params import GenerationParams, Job
from retouch.pipeline import GenerationResult, JobLog, JobResources, generate


@dataclass
class ScriptRun:
    """What a script runs its jobs with; every job shares one log (A1111's ``p.extra_generation_params``)."""

    model: Model
    options: Options
    control: JobControl
    resources: JobResources
    styles: Mapping[str, tuple[str, str]] | None = None
    log: JobLog = field(default_factory=JobLog)

    def check(self) -> None:
        """Stop at once when the job is interrupted (between and inside a script's steps)."""
        if self.control.interrupted:
            raise Interrupted

    def generate(self, params: GenerationParams) -> GenerationResult:
        from retouch.outputs import Outputs

        return generate(params, self.model, options=self.options, control=self.control, styles=self.styles,
                        log=self.log, resources=self.resources, outputs=Outputs(grid=False))


@dataclass
class ScriptOutcome:
    """What a script answers: its images (with their infotexts), the last job it ran (its parameters and result:
    the ``Processed`` fields A1111 takes from the processing object) and the fields its ``Processed`` sets."""

    images: list[Any]
    infotexts: list[str]
    last_params: GenerationParams
    last: GenerationResult
    seed: int
    info: str
    interrupted: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # other Processed fields A1111's script sets


@dataclass(frozen=True)
class ScriptArg:
    name: str  # A1111's ui() component, in order
    kind: type | tuple[type, ...]
    default: Any
    choices: Sequence[Any] | None = None
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Script:
    title: str  # A1111's title; the API matches it case-insensitively
    args: tuple[ScriptArg, ...]
    run: Callable[[ScriptRun, Job, dict[str, Any]], ScriptOutcome]
    cost: Callable[[Job, dict[str, Any], list[tuple[int, int]], Any], tuple[int, int]]  # (steps, largest pixels)
    # (job, args, find_checkpoint(name, field), find_vae(name)): the names the arguments use exist, before any work
    confirm: Callable[[Job, dict[str, Any], Callable[[str, str], Any], Callable[[str], Any]], None] | None = None

    def parse(self, values: Sequence[Any] | None) -> dict[str, Any]:
        """A1111's positional ``script_args`` → named, typed arguments (missing ones: their defaults)."""
        values = list(values or ())
        if len(values) > len(self.args):
            names = ", ".join(a.name for a in self.args)
            raise ValueError(f"script_args: {self.title} takes at most {len(self.args)} arguments ({names}), got "
                             f"{len(values)}")
        out = {}
        for i, arg in enumerate(self.args):
            value = values[i] if i < len(values) else arg.default
            out[arg.name] = _checked(self.title, i, arg, value)
        return out


def _checked(title: str, index: int, arg: ScriptArg, value: Any) -> Any:
    where = f"script_args[{index}] ({title}: {arg.name})"
    if arg.kind is object:
        return value
    kinds = arg.kind if isinstance(arg.kind, tuple) else (arg.kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ValueError(f"{where} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds):
        raise ValueError(f"{where} must be {' or '.join(k.__name__ for k in kinds)}, got {str(value)[:60]!r}")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of names, got {str(value)[:60]!r}")
    if arg.choices is not None and value not in arg.choices:
        raise ValueError(f"{where} must be one of {', '.join(map(str, arg.choices))}, got {value!r}")
    if arg.lo is not None and isinstance(value, int | float) and not arg.lo <= value <= (arg.hi or float("inf")):
        raise ValueError(f"{where} must be between {arg.lo} and {arg.hi}, got {value!r}")
    return value


def img2img_scripts() -> dict[str, Script]:
    from retouch.scripts.loopback import LOOPBACK
    from retouch.scripts.outpainting_mk2 import OUTPAINTING_MK2
    from retouch.scripts.poor_mans_outpainting import POOR_MANS_OUTPAINTING
    from retouch.scripts.prompt_matrix import PROMPT_MATRIX
    from retouch.scripts.prompts_from_file import PROMPTS_FROM_FILE
    from retouch.scripts.sd_upscale import SD_UPSCALE
    from retouch.scripts.xyz_plot import XYZ_PLOT

    # in the order A1111 loads them (by file name)
    return {s.title.lower(): s for s in (LOOPBACK, OUTPAINTING_MK2, POOR_MANS_OUTPAINTING, PROMPT_MATRIX,
                                         PROMPTS_FROM_FILE, SD_UPSCALE, XYZ_PLOT)}


def find_script(name: str) -> Script:
    """The img2img script titled ``name`` (case-insensitive, as A1111); ``ValueError`` listing the titles."""
    scripts = img2img_scripts()
    found = scripts.get(str(name).lower())
    if found is None:
        raise ValueError(f"script_name: Script '{name}' not found; the scripts are: "
                         f"{', '.join(s.title for s in scripts.values())}")
    return found


def run_script(script: Script, args: dict[str, Any], job: Job, model: Model, *, options: Options,
               control: JobControl, resources: JobResources,
               styles: Mapping[str, tuple[str, str]] | None = None) -> ScriptOutcome:
    return script.run(ScriptRun(model, options, control, resources, styles), job, args)
