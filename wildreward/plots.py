"""Figures are written to files only: matplotlib on its non-interactive Agg backend, imported on first use so that
nothing imports matplotlib unless it plots."""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot``, with the Agg backend selected (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
