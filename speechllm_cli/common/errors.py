"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class SpeechLLMError(Exception):
    """A problem the user can fix (bad input, bad config, missing file).

    The CLI prints ``str(error)`` on one line and exits with status 1, so the message must name the
    file (and line or key) and the problem without needing a traceback.
    """
