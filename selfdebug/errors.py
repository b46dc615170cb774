"""Errors a user can cause (bad config, missing file, unreachable server, bad samples file), each
raised with ONE message naming the fix. Entry scripts catch `UserError` (and FileNotFoundError) and
print the message instead of a traceback. Pure: nothing is imported here, every module may import it."""


class UserError(Exception):
    """Something the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work (unknown algorithm, reward term, backend setting, ...)."""
