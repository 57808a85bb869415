"""Rank-aware logging: every line says which rank wrote it; ranks > 0 stay quiet unless asked."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

LOGGER_NAME = "hvdtrain"


def setup_logging(rank: int, all_ranks: bool = False, level: int = logging.INFO) -> logging.Logger:
    """Configure the ``hvdtrain`` logger: ``[rank N] message`` on stderr; ranks > 0 log warnings only by default."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level if rank == 0 or all_ranks else logging.WARNING)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    """The package logger (configure it first with ``setup_logging``)."""
    return logging.getLogger(LOGGER_NAME)


def log_defaults_applied(log: logging.Logger, applied: Mapping[str, str]) -> None:
    """One line naming the environment variables hvdtrain set before ``hvd.init()`` (see ``hvdtrain.tuning``)."""
    if applied:
        settings = " ".join(f"{name}={value}" for name, value in sorted(applied.items()))
        log.info("hvdtrain defaults (export a variable to override it): %s", settings)
