"""The one error type users see: a one-line message naming the file and the problem."""


class InputError(Exception):
    """Bad user input (missing file, corrupt image, malformed labels).

    The CLI prints ``str(error)`` on one line and exits with status 2, without a traceback.
    Messages start with the offending path: ``"labels/x.mat: p2 has shape (60, 2), expected (68, 2)"``.
    """
