"""Progress of a run: a tqdm bar in a terminal, one line updated in place in a notebook."""

from __future__ import annotations

import sys
import time


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (Colab and Kaggle included)."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell else None
    except AttributeError:
        return False
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


class Progress:
    """`update(n, **postfix)` after each call of a run; `close()` at the end.

    In a notebook the progress is one text line replaced in place (no widget, no stream of
    carriage returns filling the cell); elsewhere a tqdm bar.
    """

    def __init__(self, total: int, initial: int, description: str):
        self.total, self.count, self.description = total, initial, description
        self._start = time.perf_counter()
        self._handle = self._bar = None
        if in_notebook():
            from IPython.display import display

            self._handle = display(self._line({}), display_id=True)
        else:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True,
                             desc=description)

    def _line(self, postfix: dict) -> str:
        elapsed = time.perf_counter() - self._start
        fields = ", ".join(f"{k}={v}" for k, v in postfix.items())
        return (f"{self.description}: {self.count}/{self.total} iterations "
                f"[{elapsed:.1f} s] {fields}").rstrip()

    def update(self, n: int, **postfix) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(postfix)
        elif self._handle is not None:
            self._handle.update(self._line(postfix))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
