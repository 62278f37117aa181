"""For one fit, a logger whose backend is out of reach is skipped instead of stopping training.

Lightning calls each logger's ``log_metrics``, ``log_hyperparams``, ``save``, ``finalize``, ... itself
(with the user's scalars and the callbacks' ones in the same call), outside any sink; with an MLflow
tracking server that went away mid-run, the first of these calls raises and training stops. While
one of this library's callbacks is fitting, :func:`guard_loggers` wraps these methods on each logger
*instance*: a call that fails because the backend is out of reach (an :class:`OSError` — a refused
connection, a timeout, a file that cannot be written — anywhere in the exception's chain of causes)
warns once and makes the logger's remaining calls of this fit no-ops; any other exception is raised
as before. The logger's own methods are put back, exactly as they were, when Lightning finalizes it
(the last call of a fit, after success or an exception).
"""
from __future__ import annotations

import functools
import warnings
import weakref
from typing import Any, Callable, Optional

# what Lightning calls on a logger during a fit
GUARDED_METHODS = ("log_metrics", "log_hyperparams", "log_graph", "save", "after_save_checkpoint", "finalize")
_ABSENT = object()
_GUARDS: "weakref.WeakKeyDictionary[Any, LoggerGuard]" = weakref.WeakKeyDictionary()


def out_of_reach(error: BaseException) -> bool:
    """Whether ``error`` was caused by an :class:`OSError` (itself, or anywhere in its causes).

    MLflow's client raises ``MlflowException`` from the ``requests`` connection error (an ``OSError``);
    a read-only directory raises ``PermissionError``.

    Parameters
    ----------
    error : BaseException

    Returns
    -------
    bool
    """
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class LoggerGuard:
    """The guarded methods of one logger (see the module docstring).

    Parameters
    ----------
    logger : lightning.pytorch.loggers.Logger
        The user's logger.

    Attributes
    ----------
    gone : bool
        Whether one of the logger's calls failed out of reach in this fit (its later calls are dropped).
    """

    def __init__(self, logger: Any) -> None:
        self._logger = weakref.ref(logger)
        self.gone = False
        self._shadowed: dict[str, Any] = {}

    @property
    def installed(self) -> bool:
        """Whether the logger's methods are wrapped now."""
        return bool(self._shadowed)

    def install(self) -> None:
        """Wrap the logger's methods for this fit (once; a second call while installed does nothing)."""
        logger = self._logger()
        if logger is None or self.installed:
            return
        self.gone = False
        for name in GUARDED_METHODS:
            method = getattr(logger, name, None)
            if callable(method):
                self._shadowed[name] = vars(logger).get(name, _ABSENT)
                setattr(logger, name, self._guarded(name, method))

    def restore(self) -> None:
        """Put the logger's methods back as they were (an instance attribute the user had set included)."""
        logger = self._logger()
        for name, previous in self._shadowed.items():
            if logger is None:
                break
            if previous is _ABSENT:
                delattr(logger, name)
            else:
                setattr(logger, name, previous)
        self._shadowed = {}

    def _guarded(self, name: str, method: Callable) -> Callable:
        logger_name = type(self._logger()).__name__

        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                if not self.gone:
                    return method(*args, **kwargs)
            except Exception as error:
                if not out_of_reach(error):
                    raise
                self.gone = True
                warnings.warn(
                    f"lrp_lightning: {logger_name}.{name} failed ({type(error).__name__}: {error}); its backend is "
                    f"out of reach, so its calls are dropped for the rest of this fit and training goes on",
                    RuntimeWarning,
                )
            finally:
                if name == "finalize":
                    self.restore()
            return None

        return guarded


def logger_guard(logger: Any) -> LoggerGuard:
    """The guard of ``logger`` (made on the first call, kept while the logger lives).

    Parameters
    ----------
    logger : lightning.pytorch.loggers.Logger

    Returns
    -------
    LoggerGuard
    """
    if logger not in _GUARDS:
        _GUARDS[logger] = LoggerGuard(logger)
    return _GUARDS[logger]


def guard_loggers(trainer: Any) -> None:
    """Guard every logger of ``trainer`` for the fit that starts (the callbacks call it at fit start).

    Parameters
    ----------
    trainer : lightning.pytorch.Trainer
    """
    for logger in trainer.loggers:
        logger_guard(logger).install()
