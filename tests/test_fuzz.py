"""A short run of the decoder fuzz harness (tools/fuzz_decoder.py); the long run is documented in
docs/ROBUSTNESS.md.  AECODEC_FUZZ_EXAMPLES sets the number of examples (default 120)."""

import importlib.util
import os
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_spec = importlib.util.spec_from_file_location(
    "fuzz_decoder", Path(__file__).resolve().parents[1] / "tools" / "fuzz_decoder.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

EXAMPLES = int(os.environ.get("AECODEC_FUZZ_EXAMPLES", "120"))


@pytest.fixture(scope="module")
def seeds():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fuzz.seed_files()


def test_seeds_decode(seeds):
    for s in seeds:
        assert fuzz.check(s, crafted=False, seeds=seeds) == "decoded (unchanged)"


def test_mutator_reaches_the_payload(seeds):
    """Most crafted mutations pass the container checks and reach the entropy decoder."""
    import random

    rng = random.Random(0)
    crafted = sum(fuzz.mutate(rng, seeds)[1] for _ in range(200))
    assert crafted > 100


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(r=st.randoms(use_true_random=False))
def test_decoder_fuzz_short_run(seeds, r):
    data, crafted = fuzz.mutate(r, seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fuzz.check(data, crafted, seeds)


def test_random_engine_short_run(seeds, tmp_path):
    res = fuzz.run_random(8.0, seed=1, out=tmp_path, seeds=seeds, log=lambda m: None)
    assert res["failures"] == 0 and res["executions"] > 10
