"""purejaxrl_lab: run agents over many seeds as one compiled program, and report honestly."""

import jax

# XLA:CPU's asynchronous dispatch can deadlock: a long-running program's completion is
# lost and every thread idles forever (jax-ml/jax#25861, openxla/xla#33048). We hit it
# with vmapped training loops on 2 cores. Running CPU programs inline avoids it and, on
# CPU, costs nothing (the host waits for each chunk's metrics anyway). GPU/TPU dispatch
# is unaffected. The flag is read when the CPU client is created, so this must run
# before the first computation in the process.
jax.config.update("jax_cpu_enable_async_dispatch", False)

from purejaxrl_lab import stats
from purejaxrl_lab.results import Results
from purejaxrl_lab.runner import run

load = Results.load

__all__ = ["Results", "load", "run", "stats"]
