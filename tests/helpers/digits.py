"""A small real dataset for tests: scikit-learn's 1,797 scanned handwritten digits (8x8, 17
grey levels, shipped inside its wheel; requirements/dev.in pins it), brought into
Fashion-MNIST's form (tests.helpers.idx writes them as `--dataset idx` reads them)."""

from __future__ import annotations

import numpy as np

from jobs.ingest import data

TEST_FRACTION = 0.25  # of each class, for the test split


def digits(seed: int = 0) -> data.Dataset:
    """The digits as 28x28 uint8 images, light on black as Fashion-MNIST's are: each 8x8 scan
    scaled up to 20x20 (bilinear) and centred with a 4-pixel margin, as MNIST centres its
    digits in a 20x20 box; a stratified train/test split drawn with `seed`."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    scans = load_digits()
    grey = (scans.images * (255 / 16)).round().astype(np.uint8)
    images = np.zeros((len(grey), 28, 28), np.uint8)
    for i, scan in enumerate(grey):
        images[i, 4:24, 4:24] = np.asarray(Image.fromarray(scan).resize((20, 20), Image.BILINEAR))
    labels = scans.target.astype(np.uint8)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return {"train": data.Split(train_x, train_y), "test": data.Split(test_x, test_y)}
