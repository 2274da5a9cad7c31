"""capscale's exceptions: one base class, and one mapping from exception to command-line exit code.

Every error capscale raises on purpose derives from :class:`CapscaleError`. Subclasses keep the built-in
exception they have always been (``ValueError``, ``FileNotFoundError``, ``KeyError``, ...), so existing
``except ValueError`` code keeps working, while ``except CapscaleError`` catches all of them.

Exit codes of the ``capscale`` command (:func:`exit_code`), the same for every command:

====  =======================================================================================
0     success
1     invalid input: a :class:`CapscaleError` (bad store, ladder, family spec, task, ...) or a
      missing / unreadable file
2     usage: unknown command or flag, bad flag value or combination (:class:`UsageError`,
      and argparse's own errors)
130   interrupted (Ctrl-C)
====  =======================================================================================

Any other exception is a bug in capscale: the CLI prints its traceback and exits 1.
"""

from __future__ import annotations

__all__ = [
    "CapscaleError",
    "InputError",
    "UsageError",
    "NotFittedError",
    "EXIT_OK",
    "EXIT_INVALID_INPUT",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "exit_code",
]

EXIT_OK = 0
EXIT_INVALID_INPUT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CapscaleError(Exception):
    """Base class of every error capscale raises on purpose (its message says what is wrong and where)."""


class InputError(CapscaleError, ValueError):
    """Input data that capscale cannot use (a value, a row, a file's content); names what and where."""


class UsageError(CapscaleError, ValueError):
    """A bad combination or value of options (exit code 2 on the command line)."""


class NotFittedError(CapscaleError, ValueError, AttributeError):
    """An estimator was used before ``fit`` (as scikit-learn's ``NotFittedError``)."""


def exit_code(exc: BaseException) -> int | None:
    """The CLI exit code for an exception, or ``None`` for an unexpected one (a bug: show the traceback).

    Parameters
    ----------
    exc : BaseException
        The exception a command raised.

    Returns
    -------
    int or None
        2 for :class:`UsageError`, 1 for any other :class:`CapscaleError` and for missing or unreadable files
        (``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, ``NotADirectoryError``,
        ``FileExistsError``), 130 for ``KeyboardInterrupt``, ``None`` otherwise.
    """
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, CapscaleError):
        return EXIT_INVALID_INPUT
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
                  | FileExistsError):
        return EXIT_INVALID_INPUT
    return None
