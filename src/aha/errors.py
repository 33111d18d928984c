"""The one exception type the CLI turns into a clear message instead of a traceback."""


class AhaError(Exception):
    """A problem with the user's input (a recipe, a file, a model folder) that they can fix.

    The message must say what is wrong and what to change; the CLI prints it without a traceback.
    """
