"""Draws the independent garment pictures in this folder (run from anywhere; Pillow only).

The training data's garments come from jobs/ingest/garments/ (distance fields on numpy grids).
These are made without it, to see whether a model trained on that data recognises garments
it did not draw: each class drawn twice with Pillow's own primitives (polygons, ellipses,
lines, arcs) in the way of a product picture, and once by hand as pixel art
(pixel-art.txt). Nothing here imports the project.

    <name>-photo.png   a coloured garment on a light backdrop, with margins (96x96)
    <name>-night.png   a light garment on a dark backdrop, other proportions (64x80)
    <name>-pixels.png  the pixel art, light on black, each cell 4x4 pixels
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def slug(name: str) -> str:
    return name.lower().replace("/", "-").replace(" ", "-")


def tshirt(d, c, line, v):
    w = 30 if v == 0 else 24
    d.polygon([(50 - w, 18), (50 + w, 18), (50 + w, 88), (50 - w, 88)], fill=c)
    sleeve = 22 if v == 0 else 16
    for s in (-1, 1):
        x = 50 + s * w
        d.polygon([(x - s * 8, 18), (x + s * sleeve, 30), (x + s * (sleeve - 8), 46), (x, 40)], fill=c)
    d.chord([38, 8, 62, 28], 0, 180, fill=line)


def trouser(d, c, line, v):
    hem = 14 if v == 0 else 10
    d.rectangle([30, 6, 70, 14], fill=c)
    d.polygon([(30, 12), (50, 12), (48, 40), (44 if v == 0 else 46, 96), (44 - 2 * hem, 96)], fill=c)
    d.polygon([(50, 12), (70, 12), (56 + 2 * hem, 96), (56 if v == 0 else 54, 96), (52, 40)], fill=c)
    d.line([(30, 15), (70, 15)], fill=line, width=2)


def pullover(d, c, line, v):
    d.rounded_rectangle([26, 14, 74, 80 if v == 0 else 74], radius=4, fill=c)
    for s in (-1, 1):
        x = 50 + s * 24
        d.polygon(
            [(x - s * 2, 14), (x + s * 14, 22), (x + s * (22 if v else 18), 84), (x + s * 10, 86), (x, 36)], fill=c
        )
    d.ellipse([42, 9, 58, 20], fill=line)
    d.line([(27, 74 if v == 0 else 68), (73, 74 if v == 0 else 68)], fill=line, width=2)


def dress(d, c, line, v):
    waist = 42 if v == 0 else 36
    d.polygon([(38, 14), (62, 14), (58, waist), (42, waist)], fill=c)
    d.polygon([(42, waist - 1), (58, waist - 1), (78 if v == 0 else 70, 96), (22 if v == 0 else 30, 96)], fill=c)
    if v == 0:
        d.line([(41, 14), (42, 4)], fill=c, width=3)
        d.line([(59, 14), (58, 4)], fill=c, width=3)
    else:
        d.polygon([(36, 10), (64, 10), (70, 20), (30, 20)], fill=c)
        d.ellipse([44, 6, 56, 16], fill=line)
    d.line([(42, waist), (58, waist)], fill=line, width=2)


def coat(d, c, line, v):
    d.polygon([(28, 8), (72, 8), (76, 96), (24, 96)], fill=c)
    for s in (-1, 1):
        x = 50 + s * 22
        d.polygon([(x - s * 2, 8), (x + s * 14, 16), (x + s * 20, 78), (x + s * 8, 80), (x, 30)], fill=c)
    d.line([(50, 34), (50, 96)], fill=line, width=2)
    d.line([(40, 8), (50, 34), (60, 8)], fill=line, width=2)
    for y in (44, 58, 72):
        d.ellipse([44, y, 47, y + 3], fill=line)
    if v == 1:
        d.line([(32, 66), (42, 66)], fill=line, width=2)
        d.line([(58, 66), (68, 66)], fill=line, width=2)


def sandal(d, c, line, v):
    heel = 16 if v == 0 else 4
    d.line([(4, 70), (50, 70), (90, 70 - heel)], fill=c, width=5)
    d.polygon(
        [(80, 70 - heel), (92, 70 - heel), (90, 74), (86, 74)] if v == 0 else [(76, 66), (92, 66), (92, 74), (76, 74)],
        fill=c,
    )
    for x in (10, 26, 42):
        d.line([(x, 70), (x + 14, 70 - 10 - (x - 10) // 2)], fill=c, width=4)
    d.line([(62, 40 - heel // 2), (92, 38 - heel // 2)], fill=c, width=4)
    d.line([(90, 70 - heel), (90, 38 - heel // 2)], fill=c, width=4)


def shirt(d, c, line, v):
    d.polygon([(28, 14), (72, 14), (72, 88), (28, 88)], fill=c)
    for s in (-1, 1):
        x = 50 + s * 22
        if v == 0:
            d.polygon([(x - s * 2, 14), (x + s * 14, 22), (x + s * 18, 84), (x + s * 8, 86), (x, 34)], fill=c)
        else:
            d.polygon([(x - s * 2, 14), (x + s * 18, 28), (x + s * 12, 42), (x, 36)], fill=c)
    d.polygon([(42, 8), (50, 22), (40, 26)], fill=line)
    d.polygon([(58, 8), (50, 22), (60, 26)], fill=line)
    d.line([(50, 22), (50, 88)], fill=line, width=2)
    for y in range(30, 88, 12):
        d.ellipse([52, y, 55, y + 3], fill=line)
    if v == 1:
        for k in range(34, 72, 10):
            d.line([(k, 16), (k, 88)], fill=line, width=1)


def sneaker(d, c, line, v):
    top = 40 if v == 0 else 30
    d.polygon([(6, 72), (10, 58), (30, 52), (56, top), (70, top - 4), (92, top), (94, 72)], fill=c)
    d.rectangle([4, 72, 95, 80], fill=line)
    for x in (34, 42, 50):
        d.line([(x, 56 - (x - 34) // 3), (x + 6, 48 - (x - 34) // 3)], fill=line, width=2)
    d.arc([40, 46, 90, 76], 200, 330, fill=line, width=2)


def bag(d, c, line, v):
    d.rounded_rectangle([16, 40, 84, 90] if v == 0 else [12, 36, 88, 84], radius=6, fill=c)
    if v == 0:
        d.arc([32, 14, 68, 62], 180, 360, fill=c, width=5)
    else:
        d.arc([22, 20, 44, 52], 180, 360, fill=c, width=4)
        d.arc([56, 20, 78, 52], 180, 360, fill=c, width=4)
    d.line([(16, 56), (84, 56)], fill=line, width=2)
    d.rectangle([46, 54, 54, 62], fill=line)


def ankle_boot(d, c, line, v):
    front = 50 if v == 0 else 44
    d.polygon([(front, 8), (88, 8), (90, 84), (8, 84), (8, 70), (24, 62), (front, 56)], fill=c)
    d.rectangle([6, 84, 92, 90], fill=line)
    if v == 0:
        d.rectangle([76, 90, 90, 96], fill=line)
    d.line([(front + 6, 12), (front + 6, 58)], fill=line, width=2)


DRAWINGS = (tshirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle_boot)
COLOURS = (
    (30, 40, 90),
    (180, 150, 100),
    (170, 30, 40),
    (40, 120, 60),
    (110, 70, 40),
    (40, 30, 30),
    (120, 160, 210),
    (220, 220, 230),
    (210, 120, 30),
    (70, 45, 30),
)


def photo(draw_one, colour) -> Image.Image:
    """Coloured, on a light backdrop with margins: a product picture."""
    image = Image.new("RGB", (100, 100), (244, 242, 238))
    backdrop = (244, 242, 238)
    edge = tuple(max(0, ch - 60) for ch in colour) if sum(colour) > 300 else backdrop
    draw_one(ImageDraw.Draw(image), colour, edge, 0)
    return image.resize((96, 96), Image.LANCZOS)


def night(draw_one) -> Image.Image:
    """Light grey, on a dark backdrop, other proportions."""
    image = Image.new("L", (100, 100), 20)
    draw_one(ImageDraw.Draw(image), 210, 90, 1)
    return image.resize((64, 80), Image.LANCZOS)


def pixel_art(path: Path) -> dict[str, list[str]]:
    """The grids of pixel-art.txt by class name."""
    grids, name = {}, None
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("//"):
            name = None
        elif name is None:
            name = line.strip()
            grids[name] = []
        else:
            grids[name].append(line.strip())
    return grids


def pixels(rows: list[str], cell: int = 4) -> Image.Image:
    width = max(len(r) for r in rows) + 2
    image = Image.new("L", (width * cell, (len(rows) + 2) * cell), 0)
    d = ImageDraw.Draw(image)
    for y, row in enumerate(rows, 1):
        for x, ch in enumerate(row, 1):
            level = {"#": 220, "+": 120}.get(ch)
            if level:
                d.rectangle([x * cell, y * cell, x * cell + cell - 1, y * cell + cell - 1], fill=level)
    return image


def main(out: Path = HERE) -> None:
    grids = pixel_art(HERE / "pixel-art.txt")
    for name, draw_one, colour in zip(NAMES, DRAWINGS, COLOURS, strict=True):
        photo(draw_one, colour).save(out / f"{slug(name)}-photo.png", optimize=True)
        night(draw_one).save(out / f"{slug(name)}-night.png", optimize=True)
        pixels(grids[name]).save(out / f"{slug(name)}-pixels.png", optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
