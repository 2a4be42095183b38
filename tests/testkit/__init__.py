"""Helpers the tests import (fixtures stay in the conftest files): `tests/` is on pytest's
`pythonpath`, so this package is `testkit` in every test module.

- :mod:`testkit.market`: the market a test's services use, coordinator settings and environment;
- :mod:`testkit.contracts`: drive the contracts directly (errors, events, a market driver);
- :mod:`testkit.coordinator`: an in-process coordinator, scripted trainers and validators, whole rounds.
"""


def interruptible() -> None:
    """A ``preexec_fn`` for a child the test will Ctrl-C: SIGINT at its default and unblocked, so
    the child's Python installs its KeyboardInterrupt handler whatever the test runner left
    behind in the parent (an inherited SIG_IGN or a blocked SIGINT survives exec)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
