"""The clothes: T-shirt/top, trouser, pullover, dress, coat and shirt, front views, in their
own coordinates (x to the right, y down, roughly within [-1, 1]; jobs.ingest.garments.render fits
them into the image). Each draws its sizes per image from `Draws` and returns a `Shape`."""

from __future__ import annotations

import numpy as np

from jobs.ingest.garments.shapes import Draws, Parts, Shape, capsule, cut, ellipse, poly, union, where


def sleeve(x, y, shoulder, top, armpit, angle, length, root, cuff):
    """An arm from the shoulder, `angle` below the horizontal, `length` long and `cuff` wide at
    its end; its seam under the arm meets the body at the armpit, `root` in from the shoulder
    (scaled by the angle). Both arms at once when x is |x|."""
    c, s = np.cos(angle), np.sin(angle)
    ax, ay = shoulder - 0.04, top
    bx, by = ax + length * c, ay + length * s
    cx, cy = bx - cuff * s, by + cuff * c
    return poly(x, y, (ax, ay), (bx, by), (cx, cy), (ax - root * s * 0.6, armpit))


def upper_body(d: Draws, top, hem, half, shoulder):
    """The torso shared by the tops: shoulders to hem, its armpit depth and neck."""
    armpit = top + d.u(0.3, 0.45)
    neck_w, neck_h = d.u(0.1, 0.22), d.u(0.04, 0.14)

    def torso(x, y):
        return poly(x, y, (-shoulder, top), (shoulder, top), (half, hem), (-half, hem))

    return torso, armpit, neck_w, neck_h


def long_sleeves(d: Draws, top, hem, angles: tuple[float, float], reach: tuple[float, float]):
    """The angle (degrees below the horizontal) and length of long sleeves whose cuffs come
    down to `reach` times the body's length."""
    angle = d.angle(*angles)
    return angle, (hem - top) * d.u(*reach) / np.sin(angle)


def tshirt(d: Draws) -> Shape:
    top, hem = d.u(-0.8, -0.65), d.u(0.5, 0.95)
    half = d.u(0.34, 0.52)
    sleeveless = d.p(0.2)
    shoulder = half * np.where(sleeveless, d.u(0.6, 0.8), d.u(0.95, 1.12))
    torso, armpit, neck_w, neck_h = upper_body(d, top, hem, half, shoulder)
    neck_w, neck_h = np.where(sleeveless, neck_w * 1.6, neck_w), np.where(sleeveless, neck_h * 2.5, neck_h)
    angle, length = d.angle(20, 55), d.u(0.2, 0.45)
    root, cuff = d.u(0.3, 0.42), d.u(0.18, 0.3)
    printed = d.p(0.3)
    print_w, print_h, print_y = d.u(0.12, 0.3), d.u(0.1, 0.28), d.u(-0.25, 0.1)

    def shape(x, y, details=True):
        ax = np.abs(x)
        arms = where(~sleeveless, sleeve(ax, y, shoulder, top, armpit, angle, length, root, cuff))
        body = cut(union(torso(x, y), arms), ellipse(x, y, 0, top, neck_w, neck_h))
        if not details:
            return Parts(body)
        hem_line = np.abs(y - (hem - 0.07)) - 0.02
        graphic = where(printed, ellipse(x, y, 0, print_y, print_w, print_h))
        return Parts(body, seams=hem_line, accent=graphic)

    return shape


def pullover(d: Draws) -> Shape:
    top, hem = d.u(-0.78, -0.6), d.u(0.5, 0.9)
    half = d.u(0.38, 0.55)
    shoulder = half * d.u(1.0, 1.12)
    torso, armpit, neck_w, neck_h = upper_body(d, top, hem, half, shoulder)
    angle, length = long_sleeves(d, top, hem, (55, 88), (0.95, 1.2))
    root, cuff = d.u(0.3, 0.42), d.u(0.14, 0.22)
    band = d.u(0.06, 0.13)
    turtleneck = d.p(0.2)
    collar_h = d.u(0.08, 0.16)

    def shape(x, y, details=True):
        ax = np.abs(x)
        arms = sleeve(ax, y, shoulder, top, armpit, angle, length, root, cuff)
        rolled = poly(x, y, (-neck_w, top - collar_h), (neck_w, top - collar_h), (neck_w, top), (-neck_w, top))
        collar = where(turtleneck, rolled)
        neck = where(~turtleneck, ellipse(x, y, 0, top, neck_w, neck_h))
        body = union(cut(union(torso(x, y), arms), neck), collar)
        if not details:
            return Parts(body)
        # ribbed bands at the hem and the cuffs
        hem_band = np.abs(y - (hem - band)) - 0.02
        c, s = np.cos(angle), np.sin(angle)
        cuff_x, cuff_y = shoulder - 0.04 + (length - band) * c, top + (length - band) * s
        cuffs = capsule(ax, y, cuff_x, cuff_y, cuff_x - cuff * s, cuff_y + cuff * c, 0.02)
        return Parts(body, seams=union(hem_band, cuffs), accent=collar)

    return shape


def coat(d: Draws) -> Shape:
    top, hem = d.u(-0.85, -0.7), d.u(0.75, 1.0)
    shoulder = d.u(0.4, 0.55)
    half = shoulder * d.u(1.0, 1.2)
    torso, armpit, _, _ = upper_body(d, top, hem, half, shoulder)
    angle, length = long_sleeves(d, top, hem, (60, 82), (0.72, 0.95))
    root, cuff = d.u(0.34, 0.45), d.u(0.17, 0.25)
    lapel_w, lapel_y = d.u(0.12, 0.25), top + d.u(0.25, 0.5)
    hood = d.p(0.2)
    hood_w, hood_h = d.u(0.2, 0.3), d.u(0.15, 0.25)
    pockets = d.p(0.6)
    pocket_y = d.u(0.2, 0.5)
    buttons = d.p(0.5)

    def shape(x, y, details=True):
        ax = np.abs(x)
        arms = sleeve(ax, y, shoulder, top, armpit, angle, length, root, cuff)
        hooded = where(hood, ellipse(x, y, 0, top - hood_h * 0.5, hood_w, hood_h))
        body = union(torso(x, y), arms, hooded)
        if not details:
            return Parts(body)
        opening = capsule(x, y, 0, lapel_y, 0, hem, 0.025)
        lapels = capsule(ax, y, lapel_w, top, 0, lapel_y, 0.025)
        pocket = where(pockets, capsule(ax, y, half * 0.35, pocket_y, half * 0.75, pocket_y - 0.05, 0.02))
        studs = where(buttons, np.hypot(ax - 0.08, np.mod(y - lapel_y, 0.25) - 0.12) - 0.035)
        collar = poly(ax, y, (0, top), (lapel_w, top), (0, lapel_y))
        return Parts(body, seams=union(opening, lapels, pocket, studs), accent=collar)

    return shape


def shirt(d: Draws) -> Shape:
    top, hem = d.u(-0.8, -0.65), d.u(0.55, 0.95)
    half = d.u(0.36, 0.52)
    shoulder = half * d.u(0.98, 1.12)
    torso, armpit, neck_w, _ = upper_body(d, top, hem, half, shoulder)
    long = d.p(0.65)
    angle = np.where(long, d.angle(60, 82), d.angle(25, 55))
    length = np.where(long, (hem - top) * d.u(0.9, 1.15) / np.sin(angle), d.u(0.22, 0.45))
    root, cuff = d.u(0.3, 0.4), np.where(long, d.u(0.13, 0.2), d.u(0.18, 0.28))
    collar_w, collar_h = neck_w * d.u(1.0, 1.4), d.u(0.12, 0.22)
    pocket = d.p(0.45)
    button_gap = d.u(0.18, 0.28)

    def shape(x, y, details=True):
        ax = np.abs(x)
        arms = sleeve(ax, y, shoulder, top, armpit, angle, length, root, cuff)
        neck = poly(x, y, (-neck_w, top - 0.01), (neck_w, top - 0.01), (0, top + collar_h))
        collar = poly(ax, y, (0.01, top + collar_h * 0.9), (neck_w * 0.9, top - 0.04), (collar_w, top + collar_h * 0.7))
        body = union(cut(union(torso(x, y), arms), neck), collar)
        if not details:
            return Parts(body)
        placket = capsule(x, y, 0, top + collar_h, 0, hem, 0.022)
        studs = np.hypot(x - 0.05, np.mod(y - top, button_gap) - button_gap / 2) - 0.03
        chest = where(pocket, np.abs(poly(x, y, (0.12, -0.35), (0.32, -0.35), (0.32, -0.12), (0.12, -0.12))) - 0.018)
        return Parts(body, seams=union(placket, studs, chest), accent=collar)

    return shape


def dress(d: Draws) -> Shape:
    top, hem = d.u(-1.0, -0.85), d.u(0.85, 1.0)
    bust, waist = top + d.u(0.12, 0.3), d.u(-0.3, -0.05)
    bust_w, waist_w = d.u(0.2, 0.3), d.u(0.14, 0.24)
    hem_w = waist_w + d.u(0.05, 0.75)
    kind = d.rng.integers(0, 3, (d.n, 1, 1))  # 0 straps, 1 short sleeves, 2 shoulders
    strap_x = bust_w * d.u(0.4, 0.8)
    belt = d.p(0.3)

    def shape(x, y, details=True):
        ax = np.abs(x)
        bodice_top = np.where(kind == 0, bust, top)
        bodice = poly(x, y, (-bust_w, bodice_top), (bust_w, bodice_top), (waist_w, waist), (-waist_w, waist))
        skirt = poly(x, y, (-waist_w, waist - 0.05), (waist_w, waist - 0.05), (hem_w, hem), (-hem_w, hem))
        straps = where(kind == 0, capsule(ax, y, strap_x, bust, strap_x * 0.9, top, 0.03))
        inner, outer = bust_w - 0.05, bust_w + 0.17
        cap = poly(ax, y, (inner, top), (outer, top + 0.16), (bust_w + 0.04, top + 0.28), (inner, top + 0.25))
        sleeves = where(kind == 1, cap)
        neck = where(kind != 0, ellipse(x, y, 0, top, bust_w * 0.5, bust - top + 0.08))
        body = union(cut(union(bodice, straps, sleeves), neck), skirt)
        if not details:
            return Parts(body)
        waist_seam = np.abs(y - waist) - 0.02
        sash = where(belt, poly(x, y, (-1, waist - 0.06), (1, waist - 0.06), (1, waist + 0.06), (-1, waist + 0.06)))
        return Parts(body, seams=waist_seam, accent=sash)

    return shape


def trouser(d: Draws) -> Shape:
    top, crotch, hem = -1.0, d.u(-0.5, -0.2), d.u(0.88, 1.0)
    waist = d.u(0.24, 0.55)
    hip = waist * d.u(1.0, 1.12)
    leg, gap = d.u(0.08, 0.26) * waist / 0.36, d.u(0.01, 0.16)
    band = d.u(0.06, 0.1)
    belt = d.p(0.5)

    def shape(x, y, details=True):
        ax = np.abs(x)
        hips = poly(x, y, (-waist, top), (waist, top), (hip, crotch), (-hip, crotch))
        legs = poly(ax, y, (0, crotch - 0.06), (hip, crotch - 0.06), (gap + 2 * leg, hem), (gap, hem))
        body = union(hips, legs)
        if not details:
            return Parts(body)
        waistband = np.abs(y - (top + band)) - 0.02
        fly = capsule(x, y, 0.0, top + band, 0.0, crotch - 0.05, 0.02)
        crease = capsule(ax, y, hip * 0.5, crotch, gap + leg, hem - 0.05, 0.015)
        belted = where(belt, np.abs(y - top - band / 2) - band / 2)
        return Parts(body, seams=union(waistband, fly, crease), accent=belted)

    return shape
