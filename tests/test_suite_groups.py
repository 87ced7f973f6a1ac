"""The suite's own scheduling: tests/conftest.py groups the test files that share a costly
fixture onto one pytest-xdist worker."""

import pytest


def test_loadgroup_carries_this_files_group_to_the_scheduler(request):
    """Under ``--dist loadgroup`` (scripts/test.sh) pytest-xdist carries a test's group to the
    scheduler as a ``@group`` suffix of its node id. pytest 9.2 drops the suffix
    (pytest-dev/pytest-xdist#1386): a file's tests then spread over the workers and each worker
    builds the file's encodes again, with nothing failing but the clock."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run under pytest-xdist's --dist loadgroup")
    assert request.node.nodeid.endswith("@test_suite_groups"), (
        f"{request.node.nodeid}: the xdist group is lost; install the pytest that pyproject.toml's test extra names")
