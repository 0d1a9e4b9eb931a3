"""Session fixtures of the test suite (the helpers themselves are in helpers.py and model_fixtures.py)."""

from __future__ import annotations

import pytest

from model_fixtures import DE_REPO, build_tiny, diffueraser_skip_reason, tree_digest


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """The tiny random weights of the real DiffuEraser / ProPainter classes, built once for every contract
    test of the session (``model_fixtures.build_tiny``: ``source``, ``paths``, ``digest``). Read-only: a test
    that wrote into them would change every later module's start, so the teardown checks their digest.
    Skips, with the one-line reason, where the DiffuEraser code cannot be imported."""
    reason = diffueraser_skip_reason(DE_REPO)
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("tiny_weights")
    tiny = build_tiny(root)
    yield tiny
    assert tree_digest(root) == tiny.digest, f"a test wrote into the shared tiny weights under {root}"


@pytest.fixture(scope="session")
def tiny_paths(tiny_weights):
    """The ``ModelsConfig`` path fields of the session's tiny weights (``tiny_weights.paths``)."""
    return tiny_weights.paths
