"""Signal plumbing shared by the tests that interrupt real sessions."""

from __future__ import annotations

import signal


def sigint_deliverable() -> None:
    """``preexec_fn`` that lets a child take Ctrl-C.

    A background job of a non-interactive shell (as CI may run us) starts with SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler: restore the default.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
