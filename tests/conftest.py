"""Shared fixtures: one lab of emulated hosts for the test session, and clean hosts on demand."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pyinfra_cli patches the standard library for gevent when it is imported. In an xdist worker that
    # happens after execnet's I/O thread has started, and the worker then waits forever for its next
    # test. The tests use pyinfra in their own process only to load inventories and build operations,
    # with no connection, which needs no patching; every deploy runs pyinfra in a process of its own.
    from gevent import monkey

    monkey.patch_all = lambda *args, **kwargs: None

from tailnix_lab.hosts import Lab, LabError, LabHost

SESSION_NIXOS_HOSTS = 3
SESSION_OTHER_HOSTS = 1


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running lab: nixos-1..3 and debian-1, shared by every test; stopped at the end.

    Tests that change a host take `clean_nixos_host` instead of changing these.
    """
    directory = tmp_path_factory.mktemp("lab")
    try:
        running = Lab.up(directory, SESSION_NIXOS_HOSTS, other_os=SESSION_OTHER_HOSTS)
    except LabError as error:
        # A machine that cannot run the lab must not pass the lab tests by skipping them.
        pytest.fail(f"cannot start the lab of emulated hosts: {error}", pytrace=False)
    yield running
    running.down()


@pytest.fixture
def clean_nixos_host(lab: Lab) -> Iterator[LabHost]:
    """A NixOS host for this test alone (stock files, not a sops recipient); stopped after it."""
    host = lab.add_host(os="nixos")
    yield host
    lab.stop_host(host.name)
