"""Exit codes of the command line, and the one way to report a failure on stderr."""

import sys

EXIT_CONFIG = 2  # bad configuration or usage: nothing was started
EXIT_FAILED = 1  # a run against another system failed


def fail(message: str, code: int = EXIT_CONFIG) -> int:
    """Print a CLI error and return the exit code to use."""
    sys.stderr.write(f"cockpit-exporter: {message}\n")
    return code
