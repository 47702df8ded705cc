"""The train job's validation share: fixed per image, so every round's validation images stay validation (never
trained on) and later rounds calibrate on the union of all rounds' validation images."""

from __future__ import annotations

import numpy as np

from backend.services.samples import split_validation
from vl4pose.data.sample import Sample


def _samples(start: int, stop: int) -> list[Sample]:
    return [Sample(f"task:{i}", f"/nowhere/{i}.jpg", np.zeros((14, 2)), np.full(14, 2)) for i in range(start, stop)]


def test_validation_images_stay_validation_in_every_later_round():
    rounds = [_samples(0, n) for n in range(20, 220, 20)]  # ten rounds of 20 labels
    previous: set[str] = set()
    for samples in rounds:
        train, val = split_validation(samples, 0.1)
        ids = {s.sample_id for s in val}
        assert not ids & {s.sample_id for s in train} and len(train) + len(val) == len(samples)
        assert previous <= ids  # the union of all rounds' validation images
        previous = ids
    assert 10 <= len(previous) <= 30  # about a tenth of 200


def test_tiny_label_sets_still_validate_on_two_images_and_train_on_the_rest():
    for n in range(1, 8):
        train, val = split_validation(_samples(0, n), 0.01)  # a share that alone would give no image
        assert len(val) == (1 if n < 4 else 2) and len(train) == max(1, n - len(val))
