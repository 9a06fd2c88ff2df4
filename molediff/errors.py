"""Errors that mean "the user asked for something we cannot do": the CLI prints them without a traceback."""


class UserError(Exception):
    """A problem with the user's input (files, arguments, checkpoints); the message says what to fix."""
