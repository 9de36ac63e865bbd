"""Hypothesis profiles for the property tests.

`ci` (the default) is derandomized: the same examples every run, so a CI failure
reproduces exactly. `explore` draws fresh random examples; use it locally to hunt bugs:
    HYPOTHESIS_PROFILE=explore CCERX_PROPERTY_SCALE=10 python -m pytest tests/property
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

