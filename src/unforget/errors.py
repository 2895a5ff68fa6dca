"""User-facing errors. The command line prints them as one line and exits non-zero."""


def did_you_mean(word: str, choices) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``word`` (``difflib``; ``_`` and
    ``-`` count as one), or ``""`` when none is close."""
    import difflib

    choices = [str(c) for c in choices]
    norm = {c.replace("_", "-").lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).replace("_", "-").lower(), list(norm), n=1, cutoff=0.6)
    return f" (did you mean '{norm[close[0]]}'?)" if close else ""


class UnforgetError(Exception):
    """Base class of errors that come from user input, with an actionable message."""


class DataError(UnforgetError):
    """Dataset files missing, truncated or corrupt, or a data option out of range."""


class ConfigError(UnforgetError):
    """Unknown or invalid option in a configuration file or on the command line."""


class RegistryError(UnforgetError):
    """Unknown benchmark, method or model name."""


class CheckpointError(UnforgetError):
    """A checkpoint file missing, damaged (digest mismatch, bad metadata) or inconsistent."""


class RunFolderError(UnforgetError):
    """An output folder that cannot be used: not writable, locked by another run, or holding a
    run that would be overwritten."""


class DiskFullError(RunFolderError):
    """No space left on the disk a file was being written to; the file's previous version is
    intact (every run-folder file is written atomically)."""


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e``, or an exception it was raised from, says the disk is full
    (``OSError`` ENOSPC, or safetensors' "No space left on device (os error 28)")."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e) or "os error 28" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class InputError(UnforgetError, ValueError):
    """An input a served model cannot take: ``x`` of the wrong type, shape or dtype, or a task id
    that is not an integer (a ``ValueError`` too)."""


class TaskIdError(InputError, TypeError):
    """A task id that is not an integer (a ``TypeError`` too, as for any argument of the wrong
    type)."""


class UnknownTaskError(InputError, KeyError):
    """A task id the model has not learned (a ``KeyError`` too, as a mapping lookup would be)."""

    __str__ = Exception.__str__  # the message as is, not KeyError's quoted repr
