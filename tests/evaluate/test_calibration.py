"""Temperature scaling recovers a known temperature and never changes the predicted class."""

from __future__ import annotations

import numpy as np
import pytest

from bertfit.evaluate.calibration import fit_temperature
from bertfit.metrics import cross_entropy, expected_calibration_error, softmax


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_temperature):
    rng = np.random.default_rng(0)
    calibrated = rng.normal(scale=2.0, size=(8_000, 5))
    cumulative = softmax(calibrated).cumsum(-1)
    labels = np.minimum((rng.random((len(calibrated), 1)) > cumulative).sum(-1), 4)  # one draw per row
    distorted = calibrated * true_temperature  # over- (T>1) or under-confident (T<1) logits
    temperature = fit_temperature(distorted, labels)
    assert temperature == pytest.approx(true_temperature, rel=0.06)
    assert cross_entropy(distorted / temperature, labels) < cross_entropy(distorted, labels)
    assert expected_calibration_error(softmax(distorted / temperature), labels) < \
        expected_calibration_error(softmax(distorted), labels)
    assert ((distorted / temperature).argmax(-1) == distorted.argmax(-1)).all()
