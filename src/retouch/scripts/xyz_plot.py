"""A1111's "X/Y/Z plot": one img2img job per combination of up to three axes' values, laid out as a grid per Z
value (with A1111's legends), and those grids side by side (``scripts/xyz_grid.py``, v1.10.1).

The API answers the grid first; ``include_sub_grids`` adds each Z value's grid, ``include_lone_images`` every
cell's picture. The infotexts are the grid's (the first cell's, with the axes as ``Script``, ``X Type``, ``X Values``
…), then each sub-grid's and every cell's, as A1111 lists them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from retouch.imageops.grid import image_grid
from retouch.imageops.legend import GridAnnotation, LegendColors, draw_grid_annotations
from retouch.infotext import with_params
from retouch.models.model import Model
from retouch.options import Options
from retouch.params import Job
from retouch.pipeline import GenerationResult
from retouch.scripts import Script, ScriptArg, ScriptOutcome, ScriptRun
from retouch.scripts.xyz_axes import AXES, Axis, Cell, axis_values, csv_text

TITLE = "X/Y/Z plot"
MAX_CELLS = 10_000


@dataclass(frozen=True)
class PlotAxis:
    name: str  # "X", "Y" or "Z"
    axis: Axis
    values: list[Any]
    text: str  # the values as the infotext reports them

    def labels(self) -> list[Any]:
        return [self.axis.format(self.axis, v) for v in self.values]


def plot_axes(args: dict[str, Any], *, fix_seeds: bool) -> list[PlotAxis]:
    """The three axes with their values (A1111's ``process_axis``; -1 seeds drawn unless ``no_fixed_seeds``)."""
    out = []
    for index, name in enumerate("xyz"):
        axis = find_axis(args[f"{name}_type"], f"script_args[{index * 3}] ({TITLE}: {name}_type)")
        text, dropdown = args[f"{name}_values"], args[f"{name}_values_dropdown"]
        if axis.choices and not args["csv_mode"]:
            text = csv_text(dropdown)
        where = f"script_args[{index * 3 + 1}] ({TITLE}: {name}_values, {axis.label})"
        values = axis_values(axis, text, dropdown, csv_mode=args["csv_mode"], raw_mode=False, where=where)
        if not values:
            raise ValueError(f"{where}: no values")
        if fix_seeds and axis.label in ("Seed", "Var. seed"):
            values = [random.randrange(4294967294) if v in (None, "", -1) else v for v in values]
        out.append(PlotAxis(name.upper(), axis, values, text))
    return out


def find_axis(value: int | str, where: str) -> Axis:
    """An axis by its index in A1111's img2img list (as the API passes it) or its label."""
    if isinstance(value, str):
        found = next((a for a in AXES if a.label.lower() == value.strip().lower()), None)
        if found is None:
            raise ValueError(f"{where}: no axis {value!r}; the axes are: {', '.join(a.label for a in AXES)}")
        return found
    if not 0 <= value < len(AXES):
        raise ValueError(f"{where} must be an index below {len(AXES)} into: {', '.join(a.label for a in AXES)}; "
                         f"got {value}")
    return AXES[value]


def _cells(axes: list[PlotAxis]) -> Iterator[tuple[int, int, int]]:
    """The cells in A1111's order: the costliest axis outermost, then the next (ties: Z, then Y)."""
    x, y, z = axes
    first, second = "z", "y"
    cost = {"x": x.axis.cost, "y": y.axis.cost, "z": z.axis.cost}
    for a, b, c in (("x", "y", "z"), ("y", "x", "z"), ("z", "x", "y")):
        if cost[a] > cost[b] and cost[a] > cost[c]:
            first, second = a, (b if cost[b] > cost[c] else c)
    third = ({"x", "y", "z"} - {first, second}).pop()
    sizes = {"x": len(x.values), "y": len(y.values), "z": len(z.values)}
    for i in range(sizes[first]):
        for j in range(sizes[second]):
            for k in range(sizes[third]):
                index = {first: i, second: j, third: k}
                yield index["x"], index["y"], index["z"]


def cell_of(job: Job, axes: list[PlotAxis], ix: int, iy: int, iz: int, args: dict[str, Any]) -> Cell:
    """One cell's job: the base job with each axis's value applied, its seed varied as asked."""
    cell = Cell(job.params)
    for plot_axis, i in zip(axes, (ix, iy, iz), strict=True):
        plot_axis.axis.apply(cell, plot_axis.values[i], plot_axis.values)
    xdim = len(axes[0].values) if args["vary_seeds_x"] else 1
    ydim = len(axes[1].values) if args["vary_seeds_y"] else 1
    offset = (ix if args["vary_seeds_x"] else 0) + (iy * xdim if args["vary_seeds_y"] else 0) \
        + (iz * xdim * ydim if args["vary_seeds_z"] else 0)
    if offset:
        seed = cell.params.seed
        if isinstance(seed, list) or seed is None:
            raise ValueError(f"script_args ({TITLE}): vary_seeds needs one seed, got {seed!r}")
        cell.set(seed=int(seed) + offset)
    return cell


def _base(run_options: Options, job: Job, args: dict[str, Any]) -> Job:
    params = job.params
    if not args["no_fixed_seeds"]:
        params = dataclasses.replace(params, seed=job.seeds[0], subseed=job.subseeds[0])
    if not run_options.return_grid:
        params = dataclasses.replace(params, batch_size=1)
    return dataclasses.replace(job, params=params)


def _infotext_params(axes: list[PlotAxis], no_fixed_seeds: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The keys A1111 adds to a sub-grid's infotext (X and Y), and to the main grid's (Z besides)."""
    extra: list[dict[str, Any]] = [{"Script": TITLE}, {}]
    for plot_axis, part in zip(axes, (0, 0, 1), strict=True):
        if plot_axis.axis.label == "Nothing":
            continue
        extra[part][f"{plot_axis.name} Type"] = plot_axis.axis.label
        extra[part][f"{plot_axis.name} Values"] = plot_axis.text
        if plot_axis.axis.label in ("Seed", "Var. seed") and not no_fixed_seeds:
            extra[part][f"Fixed {plot_axis.name} Values"] = ", ".join(str(v) for v in plot_axis.values)
    return extra[0], {**extra[0], **extra[1]}


@dataclass
class _Plot:
    """The cells' results as they come in (A1111's ``processed_result``)."""

    size: int
    images: list[Image.Image | None]
    prompts: list[str | None]
    seeds: list[int | None]
    infotexts: list[str | None]
    grid_infotexts: list[str | None]
    first: tuple[Any, GenerationResult] | None = None


def run(run: ScriptRun, job: Job, args: dict[str, Any]) -> ScriptOutcome:
    cost(job, args, [], None)  # every cell's job is checked before any runs
    job = _base(run.options, job, args)
    axes = plot_axes(args, fix_seeds=not args["no_fixed_seeds"])
    xs, ys, zs = (a.values for a in axes)
    size = len(xs) * len(ys) * len(zs)
    confirm_names(job, axes, args, run_checker(run))
    sub_extra, main_extra = _infotext_params(axes, args["no_fixed_seeds"])
    plot = _Plot(size, [None] * size, [None] * size, [None] * size, [None] * size, [None] * (1 + len(zs)))
    run.control.job_count = size * job.params.n_iter
    for ix, iy, iz in _cells(axes):
        idx = ix + iy * len(xs) + iz * len(xs) * len(ys)
        if run.control.interrupted and plot.first is not None:
            continue  # A1111 leaves the cells an interrupt cut off blank
        cell = cell_of(job, axes, ix, iy, iz, args)
        params = cell.params
        result = _cell_run(run, cell).generate(params)
        if plot.first is None:
            plot.first = (params, result)
        plot.images[idx] = result.images[0]
        plot.prompts[idx], plot.seeds[idx], plot.infotexts[idx] = result.prompts[0], result.seeds[0], \
            result.infotexts[0]
        if ix == 0 and iy == 0:
            plot.grid_infotexts[1 + iz] = with_params(result.infotexts[0], sub_extra)
            if iz == 0:
                plot.grid_infotexts[0] = with_params(result.infotexts[0], main_extra)
    return _outcome(run, job, axes, args, plot)


def _cell_run(run: ScriptRun, cell: Cell) -> ScriptRun:
    """What a cell runs with: its options, its checkpoint and VAE."""
    model: Model = run.model
    field = f"script_args ({TITLE})"
    if cell.checkpoint is not None:
        model = run.resources.checkpoint(cell.checkpoint, f"{field}: Checkpoint name")
    if cell.vae is not None:
        model = run.resources.with_vae(model, cell.vae, f"{field}: VAE")
    options = run.options.with_overrides(cell.overrides) if cell.overrides else run.options
    return dataclasses.replace(run, model=model, options=options)


def _outcome(run: ScriptRun, job: Job, axes: list[PlotAxis], args: dict[str, Any], plot: _Plot) -> ScriptOutcome:
    """A1111's ``draw_xyz_grid`` and the end of its ``run``: the grids, then what the options keep."""
    xs, ys, zs = (a.values for a in axes)
    first_image = next(image for image in plot.images if image is not None)
    cells = [image if image is not None else Image.new(first_image.mode, first_image.size) for image in plot.images]
    colors = LegendColors(run.options.grid_text_active_color, run.options.grid_text_inactive_color,
                          run.options.grid_background_color)
    background = run.options.grid_background_color
    sub_grids = []
    for iz in range(len(zs)):
        chunk = cells[iz * len(xs) * len(ys):(iz + 1) * len(xs) * len(ys)]
        grid = image_grid(chunk, 1, n_rows=len(ys), background=background)
        if args["draw_legend"]:
            grid = draw_grid_annotations(grid, chunk[0].width, chunk[0].height,
                                         [[GridAnnotation(str(t))] for t in axes[0].labels()],
                                         [[GridAnnotation(str(t))] for t in axes[1].labels()], args["margin_size"],
                                         colors)
        sub_grids.append(grid)
    main = image_grid(sub_grids, 1, n_rows=1, background=background)
    if args["draw_legend"]:
        main = draw_grid_annotations(main, sub_grids[0].width, sub_grids[0].height,
                                     [[GridAnnotation(str(t))] for t in axes[2].labels()], [[GridAnnotation()]],
                                     colors=colors)
    starts = [iz * len(xs) * len(ys) for iz in range(len(zs))]
    images = [main, *sub_grids, *cells] if args["include_lone_images"] else [main, *sub_grids]
    infotexts = [*plot.grid_infotexts, *plot.infotexts]
    prompts = [plot.prompts[s] for s in starts] + plot.prompts
    seeds = [plot.seeds[s] for s in starts] + plot.seeds
    if not args["include_sub_grids"]:
        del images[1:1 + len(zs)], infotexts[1:1 + len(zs)], prompts[:len(zs)], seeds[:len(zs)]
    assert plot.first is not None
    params, result = plot.first
    texts = [t or "" for t in infotexts]
    return ScriptOutcome(images, texts, params, result, result.seeds[0], texts[0],
                         interrupted=run.control.interrupted,
                         overrides={"all_prompts": prompts, "all_seeds": seeds, "subseed": result.subseeds[0],
                                    "index_of_first_image": 1})


Checker = Callable[[str, str], Any]  # (kind, name) -> raises ValueError for a name there is not


def run_checker(run: ScriptRun) -> Checker:
    def check(kind: str, name: str) -> Any:
        if kind == "checkpoint":
            return run.resources.checkpoint(name, f"script_args ({TITLE}: Checkpoint name)")
        return None  # a VAE is looked up when its cell runs
    return check


def confirm_names(job: Job, axes: list[PlotAxis], args: dict[str, Any], check: Checker) -> None:
    """Every checkpoint and VAE an axis names exists (A1111's ``confirm_checkpoints``), before any work."""
    for index, plot_axis in enumerate(axes):
        kind = plot_axis.axis.check
        if kind is None:
            continue
        for value in plot_axis.values:
            if kind == "checkpoint_or_none" and value in (None, "", "None", "none"):
                continue
            try:
                check(kind.removesuffix("_or_none"), str(value))
            except ValueError as e:
                raise ValueError(f"script_args[{index * 3 + 1}] ({TITLE}: {plot_axis.name.lower()}_values): "
                                 f"{e}") from None


def cost(job: Job, args: dict[str, Any], sizes: list[tuple[int, int]], upscalers: Any) -> tuple[int, int]:
    """(image steps, grid pixels) before any work; every cell's job is checked (``ValueError`` naming the cell)."""
    axes = plot_axes(args, fix_seeds=False)
    count = len(axes[0].values) * len(axes[1].values) * len(axes[2].values)
    if count > MAX_CELLS:
        raise ValueError(f"script_args ({TITLE}): {count} cells, more than {MAX_CELLS}")
    total, pixels = 0, 0
    for ix, iy, iz in _cells(axes):
        cell = cell_of(job, axes, ix, iy, iz, args)
        try:
            Options().with_overrides(cell.overrides)
            cell.params.validate()
        except ValueError as e:
            labels = ", ".join(str(a.labels()[i]) for a, i in zip(axes, (ix, iy, iz), strict=True) if a.labels()[i])
            raise ValueError(f"script_args ({TITLE}), cell {labels or 'the only one'}: {e}") from None
        p = cell.params
        per_image = int(p.steps * min(getattr(p, "denoising_strength", 1.0), 0.999)) + 1
        total += per_image * p.batch_size * p.n_iter
        pixels += p.width * p.height
    return total, pixels


def confirm(job: Job, args: dict[str, Any], find_checkpoint: Callable[[str, str], Any],
            find_vae: Callable[[str], Any]) -> None:
    """The names a plot's axes use are the server's (before the request is queued)."""
    axes = plot_axes(args, fix_seeds=False)

    def check(kind: str, name: str) -> Any:
        if kind == "vae":
            return None if name.lower() in ("auto", "automatic", "none") else find_vae(name)
        return find_checkpoint(name, "checkpoint")
    confirm_names(job, axes, args, check)


def _axis_arg(name: str, default: int) -> ScriptArg:
    return ScriptArg(f"{name}_type", (int, str), default)


XYZ_PLOT = Script(TITLE, (
    _axis_arg("x", 1), ScriptArg("x_values", str, ""), ScriptArg("x_values_dropdown", list, []),
    _axis_arg("y", 0), ScriptArg("y_values", str, ""), ScriptArg("y_values_dropdown", list, []),
    _axis_arg("z", 0), ScriptArg("z_values", str, ""), ScriptArg("z_values_dropdown", list, []),
    ScriptArg("draw_legend", bool, True),
    ScriptArg("include_lone_images", bool, False),
    ScriptArg("include_sub_grids", bool, False),
    ScriptArg("no_fixed_seeds", bool, False),
    ScriptArg("vary_seeds_x", bool, False),
    ScriptArg("vary_seeds_y", bool, False),
    ScriptArg("vary_seeds_z", bool, False),
    ScriptArg("margin_size", int, 0, lo=0, hi=500),
    ScriptArg("csv_mode", bool, False),
), run, cost, confirm)
