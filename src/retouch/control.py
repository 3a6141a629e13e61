"""Progress and cancellation of one job: what A1111 keeps in ``shared.state``, as a per-job value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Interrupted(Exception):  # noqa: N818 - A1111's InterruptedException
    """Raised inside a job when it was interrupted or skipped."""


@dataclass
class JobControl:
    """Progress and cancellation for one job. The server sets ``interrupted``/``skipped`` from other
    threads; the job polls them between network calls.

    ``on_step(control, info)`` is called after each sampling step with the sampler's callback dict
    (``i``, ``x``, ``denoised``, …).
    """

    interrupted: bool = False
    skipped: bool = False
    interrupts: int = 0  # how often interrupt() was called: a second one also stops the partial result's decode
    job_count: int = -1
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    on_step: Callable[[JobControl, dict[str, Any]], None] | None = None
    latent_format: Any = None  # the job's model's LatentFormat (what a live preview of ``info["denoised"]`` needs)

    def interrupt(self) -> None:
        """Stop the job within one convolution (sampling keeps its last prediction, as A1111's partial image)."""
        self.interrupts += 1
        self.interrupted = True

    def should_stop(self) -> bool:
        return self.interrupted or self.skipped


def _no_note(text: str) -> None:
    pass


def _no_check() -> None:
    pass


@dataclass(frozen=True)
class JobHooks:
    """How work done for a job reports back to it without touching shared objects: ``note(text)``
    adds a comment to the job's result; ``check()`` raises :class:`Interrupted` when the job should stop
    (called between network calls, so an interrupt lands within one of them)."""

    note: Callable[[str], None] = _no_note
    check: Callable[[], None] = _no_check
