"""The projects below are run by tests/plugin/test_e2e_scenarios.py and
tests/faults/test_interrupts.py as separate pytest sessions; the project's own test run must
not collect them (their tests hold faults on purpose and their scenarios fail on purpose)."""

collect_ignore_glob = ["*"]
