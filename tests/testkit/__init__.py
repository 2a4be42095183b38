"""Helpers the tests import (fixtures stay in the conftest files): `tests/` is on pytest's
`pythonpath`, so this package is `testkit` in every test module.

- :mod:`testkit.market`: the market a test's services use, coordinator settings and environment;
- :mod:`testkit.contracts`: drive the contracts directly (errors, events, a market driver);
- :mod:`testkit.coordinator`: an in-process coordinator, scripted trainers and validators, whole rounds.
"""
