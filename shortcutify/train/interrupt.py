"""Ctrl-C during :func:`~shortcutify.distill`, taken at the end of a step.

A ``KeyboardInterrupt`` raised in the middle of a step can leave a run between two states (the
block updated, its schedule and history not yet), so a checkpoint written then would not resume
exactly. :class:`DeferredInterrupt` records the first SIGINT instead and lets the step finish; the
loop then writes its checkpoint and raises ``KeyboardInterrupt`` itself. A second Ctrl-C interrupts at
once, as usual. Only the main thread can own the handler: elsewhere (and in processes of a
distributed run, which would have to agree on the step) SIGINT keeps its own behaviour.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["DeferredInterrupt"]


class DeferredInterrupt:
    """A context in which the first SIGINT sets :attr:`requested` instead of raising.

    Args:
        enabled: install the handler (when False, or off the main thread, the context does nothing).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C acts at once

    def __enter__(self) -> DeferredInterrupt:
        if self.enabled:
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.default_int_handler:  # (a handler of the caller's own: left in charge)
                self.enabled = False
                return self
            self._previous = previous
            signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)
