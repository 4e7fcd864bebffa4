"""Temperature scaling (Guo et al. 2017): one scalar T dividing the logits, fitted on validation data.

T changes confidence, never the predicted class, so accuracy stays the same while the negative
log-likelihood and the calibration error usually drop. The fitted T is stored in bertfit.json,
where `Predictor` already divides logits by it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iterations: int = 100) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) on (logits, labels), by LBFGS on log T."""
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    # Optimising log T keeps T positive without a constraint and makes the problem better scaled.
    log_temperature = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=max_iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_temperature.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_temperature.detach().exp())
    if not np.isfinite(temperature):
        log.warning("temperature fit diverged; keeping T = 1")
        return 1.0
    return float(np.clip(temperature, MIN_TEMPERATURE, MAX_TEMPERATURE))
