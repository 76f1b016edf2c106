"""Fit the process's open-file limit (RLIMIT_NOFILE) to CHATBRIDGE_CONCURRENCY at start-up."""

from __future__ import annotations

import logging

from core.errors import ConfigError

__all__ = ["descriptors_needed", "fit_descriptor_limit"]

log = logging.getLogger(__name__)

# What a replica holds besides its turns: database pool (30), listening socket, log
# files, the interpreter's own files, a platform SDK's pool.
BASE_DESCRIPTORS = 128
# Per running turn: its model connection and (at most) one platform API connection.
PER_TURN = 2


def descriptors_needed(concurrency: int) -> int:
    """File descriptors a replica running ``concurrency`` turns at once may hold."""
    return BASE_DESCRIPTORS + PER_TURN * concurrency


def fit_descriptor_limit(concurrency: int) -> int | None:
    """Raise the soft RLIMIT_NOFILE towards the hard one so ``concurrency`` turns fit.

    Returns the soft limit now in force (``None`` where the platform has no such limit).
    Raises ``ConfigError`` naming what to set when even the hard limit is too low: a
    replica short of descriptors fails turns as if the model were down.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    needed = descriptors_needed(concurrency)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= needed:
        return None if soft == unlimited else soft
    if hard != unlimited and hard < needed:
        most = max((hard - BASE_DESCRIPTORS) // PER_TURN, 1)
        raise ConfigError(
            f"CHATBRIDGE_CONCURRENCY={concurrency} needs about {needed} open files, but this "
            f"process may open at most {hard} (RLIMIT_NOFILE): set CHATBRIDGE_CONCURRENCY to "
            f"{most} or less, or raise the limit (`ulimit -n {needed}`, systemd "
            f"LimitNOFILE={needed}, docker --ulimit nofile={needed}:{needed})"
        )
    target = needed if hard == unlimited else max(needed, min(hard, 65536))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as err:
        raise ConfigError(
            f"CHATBRIDGE_CONCURRENCY={concurrency} needs about {needed} open files; the soft "
            f"limit is {soft} and raising it failed ({err}): run `ulimit -n {needed}` first"
        ) from err
    log.info("raised the open-file limit from %d to %d for %d concurrent turns",
             soft, target, concurrency)
    return target
