import os

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(min(2, os.cpu_count() or 1))
if not torch.cuda.is_available():
    # Triton kernels run through Triton's interpreter on the CPU (tests/test_fast_path.py); the
    # variable must be set before anything imports triton (collecting other tests may)
    os.environ.setdefault("TRITON_INTERPRET", "1")
_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
# default: the same examples on every run and machine (a suite that passes here passes in CI); "explore": new
# random examples on each run, more of them (HYPOTHESIS_PROFILE=explore python -m pytest tests/test_properties.py)
settings.register_profile("default", deadline=None, max_examples=25, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("explore", deadline=None, max_examples=100, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
