"""Errors a user can cause, each raised with one message naming the fix. Entry scripts catch
these and print the message instead of a traceback."""

from selfdebug.data import DataError
from selfdebug.evaluation import SamplesError
from selfdebug.execution import SandboxUnavailable
from selfdebug.generation import BackendError
from selfdebug.models import ModelResolveError

USER_ERRORS = (DataError, SamplesError, SandboxUnavailable, ModelResolveError, BackendError, FileNotFoundError)
