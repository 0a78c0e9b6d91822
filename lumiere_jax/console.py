"""What the command-line entry points print: the project's progress lines, libraries' chatter hidden.

    console.setup_logging(verbose=False)   # "HH:MM:SS message" lines of the lumiere_jax logger on stderr
"""

from __future__ import annotations

import logging

from absl import logging as absl_logging


def setup_logging(verbose: bool = False) -> None:
    """Our progress lines on stderr; library INFO chatter (orbax logs every file it writes) only when verbose."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("lumiere_jax")
    ours.handlers[:] = [handler]
    ours.setLevel(logging.INFO)
    ours.propagate = False
    if not verbose:
        absl_logging.set_verbosity(absl_logging.WARNING)
