"""Calibration methods: estimators that map scores in logit space to P(correct).

Every estimator follows the scikit-learn contract — ``__init__`` only stores hyper-parameters,
``fit(Z, y)`` learns state in attributes ending in ``_`` and returns ``self`` — and adds:

- ``predict(Z)``: calibrated probabilities for a batch, vectorised;
- ``predict_one(z)``: the same for one row in plain Python. A request decides one response at a
  time, where NumPy's per-call overhead (microseconds per array op) would cost more than the
  arithmetic; the scalar path keeps a single prediction within a few microseconds;
- ``to_params()`` / ``from_params()``: the fitted state as plain JSON numbers, so an artifact
  is data and loading it never executes code.

Inputs ``Z`` have shape ``(n_rows, n_features)``: probability scores already mapped to log-odds
(see :mod:`calibrators.signals`), so ``sigmoid(z)`` recovers the raw probability.

One module per family of methods, each class one method:

- :mod:`~calibrators.methods.scaling`: parametric maps of one score (``identity``, ``platt``,
  ``temperature``, ``beta``);
- :mod:`~calibrators.methods.binning`: step functions of one score (``isotonic``,
  ``histogram``);
- :mod:`~calibrators.methods.logistic`: several scores combined (``logistic``,
  ``logistic_isotonic``, ``binned_logistic``);
- :mod:`~calibrators.methods.base`: the :class:`Calibrator` contract they share.

:data:`METHODS` below is the one place a method is added: write its class (in its family's
module, or a new one) and list it there; selection, the CLI, artifacts and the tests read it.
"""

from __future__ import annotations

from collections.abc import Mapping

# scikit-learn and SciPy are imported inside the ``fit`` methods only: the gateway loads
# artifacts and predicts with NumPy alone, and importing those libraries costs a worker
# seconds and ~100 MiB before it can answer its first request.
from .base import Calibrator
from .binning import HistogramCalibrator, IsotonicCalibrator
from .logistic import BinnedLogisticCalibrator, LogisticCalibrator, LogisticIsotonicCalibrator
from .scaling import BetaCalibrator, IdentityCalibrator, PlattCalibrator, TemperatureCalibrator

__all__ = [
    "METHODS",
    "BetaCalibrator",
    "BinnedLogisticCalibrator",
    "Calibrator",
    "HistogramCalibrator",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "LogisticCalibrator",
    "LogisticIsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
]

#: Every method by its name in artifacts and on the command line.
METHODS: Mapping[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        IdentityCalibrator,
        PlattCalibrator,
        TemperatureCalibrator,
        BetaCalibrator,
        IsotonicCalibrator,
        HistogramCalibrator,
        LogisticCalibrator,
        LogisticIsotonicCalibrator,
        BinnedLogisticCalibrator,
    )
}
