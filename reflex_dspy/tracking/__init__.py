"""Trackers: everything that records or shows the state of a run goes through one interface."""

from reflex_dspy.tracking.base import Tracker, Trackers

__all__ = ["Tracker", "Trackers"]
