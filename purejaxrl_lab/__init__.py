"""purejaxrl_lab: run agents over many seeds as one compiled program, and report honestly."""

from purejaxrl_lab import stats
from purejaxrl_lab.results import Results
from purejaxrl_lab.runner import execute, prepare, run

load = Results.load

__all__ = ["Results", "execute", "load", "prepare", "run", "stats"]
