"""`UserError`: a failure the user causes and can fix (a bad variable, no credentials, an unusable
argument). Commands print its message as one line and exit 2; it never carries a traceback."""


class UserError(Exception):
    """The message names what is wrong (the variable, flag or file) and what is accepted."""
