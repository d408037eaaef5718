"""The error hierarchy shared by passes, calibration and the application.

Every expected failure is an :class:`OnnxSlimError`. The command line turns one into a one-line
message and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "OnnxSlimError",
    "ModelLoadError",
    "ModelSaveError",
    "InvalidModelError",
    "PreconditionError",
    "PassError",
    "VerificationError",
    "CalibrationError",
    "UnsupportedModelError",
    "DataError",
    "NothingToDoError",
    "UsageError",
    "UnknownNameError",
]


class OnnxSlimError(Exception):
    """Base class of every error onnxslim reports to a user."""


class ModelLoadError(OnnxSlimError):
    """A model file is missing, unreadable, not ONNX or truncated."""


class ModelSaveError(OnnxSlimError):
    """A model could not be written (bad target, refused overwrite of the input, disk error)."""


class InvalidModelError(OnnxSlimError):
    """A model fails ``onnx.checker``; the message names the node and the reason."""


class PreconditionError(OnnxSlimError):
    """A pass cannot run on this model; the message says why."""


class PassError(OnnxSlimError):
    """A pass failed; carries the pass name and the passes that ran before it."""

    def __init__(self, pass_name: str, before: list[str], reason: str) -> None:
        self.pass_name = pass_name
        self.before = list(before)
        self.reason = reason
        after = f" after {', '.join(self.before)}" if self.before else ""
        super().__init__(f"pass '{pass_name}' failed{after}: {reason}")


class VerificationError(OnnxSlimError):
    """A rewritten model does not match its input within the pass's tolerance."""


class CalibrationError(OnnxSlimError):
    """Calibration could not run or produced no usable statistics."""


class UnsupportedModelError(OnnxSlimError):
    """The model uses something a pass cannot handle."""


class DataError(OnnxSlimError):
    """User data (calibration or evaluation samples) does not fit the model."""


class NothingToDoError(OnnxSlimError):
    """The pass that is the point of a command found nothing to change (an output would be a copy)."""


class UsageError(OnnxSlimError):
    """Something the user asked for does not fit the model or the other options; the command
    line exits 2, as for a malformed flag."""


class UnknownNameError(UsageError):
    """A node or op type named on the command line is not in the model."""
