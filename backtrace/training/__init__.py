"""Training made visible: gradient descent on formulas, optimizers step by step, and `watch` for
real PyTorch loops. Importing this package does not import torch or matplotlib."""
from __future__ import annotations

from .descend import Descent, DescentStep, Verdict, descend, descend_runs, judge
from .optimizers import OPTIMIZERS, SCHEDULES, Update, make_optimizer, make_schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "Descent", "DescentStep", "Update", "Verdict", "descend",
           "descend_runs", "judge", "make_optimizer", "make_schedule"]
