"""Shoes and bags: sandal, sneaker and ankle boot in side view, toe to the left as in
Fashion-MNIST, and the bag, in their own coordinates (x to the right, y down, the ground at
y = 0; jobs.ingest.garments.render fits them into the image)."""

from __future__ import annotations

import numpy as np

from jobs.ingest.garments.shapes import Draws, Parts, Shape, capsule, ellipse, poly, ring, union, where


def sandal(d: Draws) -> Shape:
    heel = np.where(d.p(0.45), 0.0, d.u(0.15, 0.5))
    sole, strap = d.u(0.04, 0.08), d.u(0.04, 0.075)
    ball, heel_foot = d.u(-0.45, -0.15), d.u(0.03, 0.12)
    wedge, slide, t_strap, toe_loop, closed = d.p(0.15), d.p(0.2), d.p(0.25), d.p(0.4), d.p(0.25)
    ankle_x, ankle_y = d.u(0.35, 0.55), -heel - d.u(0.5, 0.75)
    toe_x, toe_y = -0.85, -sole - d.u(0.1, 0.18)
    # two to four straps across the foot, from the footbed up to the instep, leaning back
    count, lean = d.rng.integers(2, 5, (d.n, 1, 1)), d.u(0.05, 0.3)
    first, last = d.u(-0.75, -0.55), ankle_x - d.u(0.25, 0.45)
    band_from, band_to = d.u(-0.75, -0.55), d.u(-0.35, -0.1)

    def footbed_y(at):
        return np.where(at < ball, -sole, -sole - heel * np.clip((at - ball) / (0.88 - ball), 0, 1))

    def instep_y(at):
        return toe_y + (at - toe_x) / (ankle_x - toe_x) * (ankle_y - toe_y)

    def shape(x, y, details=True):
        footbed = union(
            capsule(x, y, -0.92, -sole, ball, -sole, sole),
            capsule(x, y, ball, -sole, 0.88, -sole - heel, sole),
        )
        block = where(heel > 0.05, poly(x, y, (0.62, -heel), (0.88, -heel), (0.86, 0.0), (0.86 - heel_foot, 0.0)))
        strapped = ~slide
        wedged = where(wedge & strapped & (heel > 0.05), poly(x, y, (ball + 0.2, -sole), (0.88, -heel), (0.88, 0.0)))
        straps = []
        for i in range(4):
            at = first + (last - first) * i / np.maximum(count - 1, 1)
            crossing = capsule(x, y, at, footbed_y(at), at + lean, instep_y(at + lean), strap)
            straps.append(where(strapped & (i < count), crossing))
        loop = np.maximum(ring(x, y, -0.7, -sole, 0.16, 0.14, strap), y + sole)
        straps.append(where(strapped & toe_loop, loop))
        band_top = np.minimum(instep_y(band_to), -sole - 0.35)
        band = poly(x, y, (band_from, -sole), (band_from, toe_y), (band_to, band_top), (band_to, -sole))
        straps.append(where(slide, band))
        straps.append(where(strapped, capsule(x, y, ankle_x - 0.2, ankle_y + 0.06, 0.88, ankle_y - 0.02, strap)))
        straps.append(where(strapped, capsule(x, y, 0.86, -heel - sole, 0.86, ankle_y, strap)))
        counter = poly(x, y, (0.6, footbed_y(0.6)), (0.88, -heel - sole), (0.88, ankle_y), (0.72, ankle_y + 0.1))
        straps.append(where(strapped & closed, counter))
        straps.append(where(strapped & t_strap, capsule(x, y, -0.35, instep_y(-0.35), ankle_x - 0.1, ankle_y, strap)))
        body = union(footbed, block, wedged, *straps)
        if not details:
            return Parts(body)
        return Parts(body, accent=union(footbed, block, wedged))

    return shape


def sneaker(d: Draws) -> Shape:
    sole = d.u(0.08, 0.16)
    height = d.u(0.45, 0.9) * np.where(d.p(0.1), 1.5, 1.0)
    vamp = height * d.u(0.4, 0.8)
    throat, collar_x = d.u(0.0, 0.35), d.u(0.4, 0.65)  # where the laces end, where the ankle is
    lace_x = throat - d.u(0.45, 0.6)
    stripe = d.p(0.6)

    def shape(x, y, details=True):
        base = -sole
        outsole = capsule(x, y, -0.9, -sole / 2, 0.9, -sole / 2, sole / 2)
        low = -sole / 2  # the uppers reach into the outsole: no gap between them
        toe = np.maximum(ellipse(x, y, -0.6, base, 0.36, vamp * 0.6), y - low)
        front = poly(x, y, (-0.75, low), (-0.55, base - vamp * 0.75), (throat, base - vamp), (throat, low))
        heel_top = (0.93, base - height * 0.9)
        back = poly(
            x, y, (throat - 0.06, base - vamp), (collar_x, base - height), heel_top, (0.93, low), (throat - 0.06, low)
        )
        body = union(outsole, toe, front, back)
        if not details:
            return Parts(body)
        lace = [(lace_x + i * 0.14, base - vamp * (0.8 + i * 0.07), base - vamp * (0.5 + i * 0.07)) for i in range(3)]
        laces = union(*(capsule(x, y, at, low_end, at + 0.08, high_end, 0.025) for at, low_end, high_end in lace))
        swoosh = where(stripe, capsule(x, y, -0.2, base - 0.08, 0.65, base - height * 0.5, 0.035))
        collar = ring(x, y, collar_x + 0.22, base - height * 0.95, 0.25, 0.1, 0.03)
        return Parts(body, seams=union(laces, swoosh, collar), accent=outsole)

    return shape


def ankle_boot(d: Draws) -> Shape:
    sole = d.u(0.06, 0.13)
    heel = np.where(d.p(0.5), d.u(0.06, 0.25), 0.0)
    shaft = d.u(1.0, 1.5)
    front = d.u(-0.15, 0.15)
    lean = d.u(-0.1, 0.15)
    foot = d.u(0.28, 0.45)
    laced = d.p(0.3)
    panel = d.p(0.3)

    def shape(x, y, details=True):
        base = -sole - heel
        outsole = union(
            capsule(x, y, -0.9, -sole / 2, 0.3, -sole / 2, sole / 2),
            poly(x, y, (0.3, 0.0), (0.92, 0.0), (0.92, base), (0.3, -sole)),
        )
        low = -sole / 2  # the upper reaches into the outsole: no gap between them
        toe = np.maximum(ellipse(x, y, -0.62, -sole, 0.32, foot * 0.6), y - low)
        instep = (front + 0.08, base - foot * 1.3)
        vamp = poly(x, y, (-0.8, low), (-0.6, -sole - foot * 0.8), instep, (front + 0.08, low))
        leg = poly(x, y, (front + lean, base - shaft), (0.9, base - shaft), (0.93, low), (front, low))
        body = union(outsole, toe, vamp, leg)
        if not details:
            return Parts(body)
        top_band = np.abs(y - (base - shaft + 0.08)) - 0.02
        lacing = capsule(x, y, front + 0.08, base - foot * 1.2, front + lean + 0.08, base - shaft + 0.1, 0.03)
        laces = where(laced, lacing)
        elastic = where(panel, poly(x, y, (0.3, base - shaft), (0.62, base - shaft), (0.46, base - foot)))
        return Parts(body, seams=union(top_band, laces), accent=union(outsole, elastic))

    return shape


def bag(d: Draws) -> Shape:
    half, height = d.u(0.6, 0.95), d.u(0.6, 1.1)
    top_half = half * d.u(0.72, 1.0)
    top, bottom = -height / 2, height / 2
    kind = d.rng.choice(4, (d.n, 1, 1), p=(0.4, 0.25, 0.2, 0.15))  # one handle, two, a long strap, none
    handle_w, handle_h = top_half * d.u(0.35, 0.6), d.u(0.25, 0.5)
    thick = d.u(0.04, 0.08)
    flap = d.p(0.45)
    flap_y = top + height * d.u(0.25, 0.5)

    def shape(x, y, details=True):
        ax = np.abs(x)
        above = y - top  # handles are the upper halves of rings
        one = np.maximum(ring(x, y, 0, top, handle_w, handle_h, thick), above)
        two = np.maximum(ring(ax, y, top_half * 0.5, top, handle_w * 0.45, handle_h * 0.8, thick), above)
        strap = np.maximum(ring(x, y, 0, top, top_half * 0.9, handle_h * 2.2, thick * 0.6), above)
        handle = np.where(kind == 0, one, np.where(kind == 1, two, np.where(kind == 2, strap, np.inf)))
        body = union(poly(x, y, (-top_half, top), (top_half, top), (half, bottom), (-half, bottom)), handle)
        if not details:
            return Parts(body)
        outline = poly(
            x, y, (-top_half, top), (top_half, top), (top_half, flap_y), (0, flap_y + 0.12), (-top_half, flap_y)
        )
        flap_line = where(flap, np.abs(outline) - 0.02)
        clasp = where(flap, ellipse(x, y, 0, flap_y + 0.06, 0.07, 0.06))
        return Parts(body, seams=union(flap_line, clasp), accent=handle)

    return shape
