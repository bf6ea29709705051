"""PNG grids for strength sweeps: one row per direction, a source column then one column per strength."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from eimsdk.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

MIN_CELL = 128  # small images (toy models) are upscaled with nearest-neighbour to at least this many pixels
PAD = 4
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def edit_grid(rows: Sequence[Sequence["Image.Image"]], row_labels: Sequence[str] | None = None,
              col_labels: Sequence[str] | None = None, *, font_size: int = 14) -> "Image.Image":
    """Lay out ``rows`` of PIL images (all rows the same length) with labels on the left and on top."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows or not all(len(r) for r in rows):
        raise InputError("rows must be a non-empty list of non-empty lists of images")
    ncols = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != ncols:
            raise InputError(f"rows[{i}] has {len(r)} images but rows[0] has {ncols}; every row needs one image per "
                             "column")
        for j, im in enumerate(r):
            if not isinstance(im, Image.Image):
                raise InputError(f"rows[{i}][{j}] must be a PIL image, got {type(im).__name__}")
    if row_labels is not None and len(row_labels) != len(rows):
        raise InputError(f"row_labels has {len(row_labels)} labels for {len(rows)} rows; pass one per row")
    if col_labels is not None and len(col_labels) != ncols:
        raise InputError(f"col_labels has {len(col_labels)} labels for {ncols} columns; pass one per column")
    font = ImageFont.load_default(size=font_size)
    scale = max(1, -(-MIN_CELL // max(max(im.width, im.height) for r in rows for im in r)))
    cell_w = max(im.width for r in rows for im in r) * scale
    cell_h = max(im.height for r in rows for im in r) * scale
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        box = measure.textbbox((0, 0), text, font=font)
        return box[2] - box[0], box[3] - box[1]

    left = max((size(t)[0] for t in row_labels), default=0) + 2 * PAD if row_labels else 0
    top = max((size(t)[1] for t in col_labels), default=0) + 2 * PAD if col_labels else 0
    grid = Image.new("RGB", (left + ncols * (cell_w + PAD) + PAD, top + len(rows) * (cell_h + PAD) + PAD), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for j, text in enumerate(col_labels or []):
        w, _ = size(text)
        draw.text((left + PAD + j * (cell_w + PAD) + (cell_w - w) // 2, PAD), text, fill=INK, font=font)
    for i, row in enumerate(rows):
        y = top + PAD + i * (cell_h + PAD)
        if row_labels:
            _, h = size(row_labels[i])
            draw.text((PAD, y + (cell_h - h) // 2), row_labels[i], fill=INK, font=font)
        for j, im in enumerate(row):
            im = im.convert("RGB")
            if scale > 1:
                im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
            grid.paste(im, (left + PAD + j * (cell_w + PAD), y))
    return grid
