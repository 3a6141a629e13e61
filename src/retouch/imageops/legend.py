"""A1111's grid legends (``images.draw_grid_annotations`` and ``draw_prompt_matrix``), drawn with the Roboto that
ships in ``retouch/assets`` (the font A1111 draws them with).

Layout is A1111's to the pixel: the font size is ``(cell width + cell height) // 25``, a label wider than its cell
wraps at words and shrinks until it fits, row labels take a left margin of ¾ of a cell, inactive labels (the
prompt matrix's parts left out) are grey and struck through. Glyph pixels can differ slightly from A1111's:
Pillow 12 rasterises with FreeType 2.14, whose auto-hinter places some marks (the dot of an i) a pixel away from
the FreeType 2.13 of A1111's Pillow 9.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

from PIL import Image, ImageColor, ImageDraw, ImageFont


@dataclass
class GridAnnotation:
    """One legend line: its text, and whether the part it names is in (False: grey, struck through)."""

    text: str = ""
    is_active: bool = True


@dataclass(frozen=True)
class LegendColors:
    """A1111's ``grid_text_active_color``, ``grid_text_inactive_color`` and ``grid_background_color``."""

    active: str = "#000000"
    inactive: str = "#999999"
    background: str = "#ffffff"


@dataclass
class _Line:
    text: str
    is_active: bool
    width: int
    height: int
    allowed_width: int


@cache
def legend_font(size: int) -> ImageFont.FreeTypeFont:
    with resources.as_file(resources.files("retouch.assets").joinpath("Roboto-Regular.ttf")) as path:
        return ImageFont.truetype(str(path), size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines = [""]
    for word in text.split():
        line = f"{lines[-1]} {word}".strip()
        if draw.textlength(line, font=font) <= width:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def _measured(labels: list[list[GridAnnotation]], width: int, font: ImageFont.FreeTypeFont) -> list[list[_Line]]:
    """Each position's labels wrapped to ``width``, with their ink sizes."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    out = []
    for texts in labels:
        lines = []
        for label in texts:
            for text in _wrap(draw, label.text, font, width):
                box = draw.multiline_textbbox((0, 0), text, font=font)
                lines.append(_Line(text, label.is_active, int(box[2] - box[0]), int(box[3] - box[1]), width))
        out.append(lines)
    return out


def draw_grid_annotations(grid: Image.Image, width: int, height: int, x_labels: list[list[GridAnnotation]],
                          y_labels: list[list[GridAnnotation]], margin: int = 0,
                          colors: LegendColors = LegendColors()) -> Image.Image:
    """``grid`` (cells of ``width`` × ``height``) with column labels above, row labels at the left and ``margin``
    pixels between cells. ``ValueError`` when the label counts do not match the grid's columns and rows."""
    cols, rows = grid.width // width, grid.height // height
    if cols != len(x_labels) or rows != len(y_labels):
        raise ValueError(f"grid legend: {len(x_labels)} column and {len(y_labels)} row labels for a grid of "
                         f"{cols} columns and {rows} rows")
    size = (width + height) // 25
    spacing = size // 2
    font = legend_font(size)
    pad_left = 0 if sum(len(a.text) for texts in y_labels for a in texts) == 0 else width * 3 // 4
    columns = _measured(x_labels, width, font)
    row_lines = _measured(y_labels, pad_left, font)
    col_heights = [sum(line.height + spacing for line in lines) - spacing for lines in columns]
    row_heights = [sum(line.height + spacing for line in lines) - spacing * len(lines) for lines in row_lines]
    pad_top = 0 if sum(col_heights) == 0 else max(col_heights) + spacing * 2
    background = ImageColor.getcolor(colors.background, "RGB")
    result = Image.new("RGB", (grid.width + pad_left + margin * (cols - 1), grid.height + pad_top + margin * (rows - 1)),
                       background)
    for row in range(rows):
        for col in range(cols):
            cell = grid.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))
    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(columns):
        _draw_lines(draw, pad_left + (width + margin) * col + width / 2, pad_top / 2 - col_heights[col] / 2, lines,
                    size, spacing, colors)
    for row, lines in enumerate(row_lines):
        y = pad_top + (height + margin) * row + height / 2 - row_heights[row] / 2
        _draw_lines(draw, pad_left / 2, y, lines, size, spacing, colors)
    return result


def _draw_lines(draw: ImageDraw.ImageDraw, x: float, y: float, lines: list[_Line], size: int, spacing: int,
                colors: LegendColors) -> None:
    active = ImageColor.getcolor(colors.active, "RGB")
    inactive = ImageColor.getcolor(colors.inactive, "RGB")
    for line in lines:
        font, fitted = legend_font(size), size
        while draw.multiline_textbbox((0, 0), line.text, font=font)[2] > line.allowed_width and fitted > 1:
            fitted -= 1
            font = legend_font(fitted)
        draw.multiline_text((x, y + line.height / 2), line.text, font=font, fill=active if line.is_active else inactive,
                            anchor="mm", align="center")
        if not line.is_active:
            middle = y + line.height // 2
            draw.line((x - line.width // 2, middle, x + line.width // 2, middle), fill=inactive, width=4)
        y += line.height + spacing


def draw_prompt_matrix(grid: Image.Image, width: int, height: int, parts: list[str], margin: int = 0,
                       colors: LegendColors = LegendColors()) -> Image.Image:
    """The prompt matrix's legend: the first half of the variable ``parts`` across, the rest down, each position
    showing which parts its cells include."""
    variable = parts[1:]
    boundary = math.ceil(len(variable) / 2)
    across, down = variable[:boundary], variable[boundary:]
    x_labels = [[GridAnnotation(text, pos & (1 << i) != 0) for i, text in enumerate(across)]
                for pos in range(1 << len(across))]
    y_labels = [[GridAnnotation(text, pos & (1 << i) != 0) for i, text in enumerate(down)]
                for pos in range(1 << len(down))]
    return draw_grid_annotations(grid, width, height, x_labels, y_labels, margin, colors)
