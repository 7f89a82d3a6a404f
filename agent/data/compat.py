"""Runtime fixes that let davisinteractive 1.0.4 run on numpy 2, pandas 3, networkx 3, scikit-image 0.26.

davisinteractive is GPL-3.0: we depend on it and patch it at run time; none of its code is copied here.
Call :func:`apply` before importing any ``davisinteractive`` module (``import agent.data.compat`` does it).
What is fixed and why:

* numpy 2 removed the ``np.int``/``np.float``/``np.bool``/``np.object`` aliases and ``np.trapz``;
  davisinteractive uses them, some at import time (a default argument of ``Davis.load_annotations``).
* networkx 3 removed ``from_scipy_sparse_matrix`` (the robot builds its skeleton graph with it).
* pandas 3 refuses ``groupby(...).mean()`` over text columns and keeps ``object`` dtypes from an
  empty report it concatenates into; the summary is computed on a numeric copy of the report.
* scikit-image >= 0.19 breaks ties in ``medial_axis`` with an unseeded generator, so the robot could
  return different scribbles for the same prediction; it gets a fixed generator here.
* the HTTP client (``RemoteConnector``) eval()s server-sent error names and has no timeouts:
  agent/data/remote_compat.py replaces both.
"""

from __future__ import annotations

import functools
import logging

import networkx as nx
import numpy as np

from . import remote_compat

log = logging.getLogger(__name__)

# Seed for the robot's skeleton tie-breaking: any fixed value makes the robot a pure function.
ROBOT_SKELETON_SEED = 0

_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "object": object}
_applied = False


def _patch_numpy() -> None:
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid


def _patch_networkx() -> None:
    if not hasattr(nx, "from_scipy_sparse_matrix"):
        nx.from_scipy_sparse_matrix = nx.from_scipy_sparse_array


def _numeric_report(df):
    """The report as pandas 3 can average it: no text columns but the keys, numeric dtypes."""
    import pandas as pd

    df = df.drop(columns=[c for c in ("session_id",) if c in df.columns]).copy()
    for column in df.columns:
        if column == "sequence":
            df[column] = df[column].astype(str)
        else:
            df[column] = pd.to_numeric(df[column])
    return df


def _patch_davisinteractive() -> None:
    from davisinteractive.evaluation import service
    from davisinteractive.robot import interactive_robot
    from skimage.morphology import medial_axis

    original_summarize = service.EvaluationService.summarize_report

    @functools.wraps(original_summarize)
    def summarize_report(self, df):
        return original_summarize(self, _numeric_report(df))

    service.EvaluationService.summarize_report = summarize_report
    interactive_robot.medial_axis = functools.partial(medial_axis, rng=ROBOT_SKELETON_SEED)
    remote_compat.install()


def apply() -> None:
    """Apply every fix once; safe to call many times."""
    global _applied
    if _applied:
        return
    _patch_numpy()
    _patch_networkx()
    _patch_davisinteractive()
    _applied = True
    log.debug("davisinteractive compatibility fixes applied")


apply()
