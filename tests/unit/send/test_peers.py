"""Leases between our runs on one machine: who else sends to a location, dead runs forgotten."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.send.peers import FRESH_S, REFRESH_S, Peers
from tests.conftest import REPO

API = "http://127.0.0.1:8099"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_two_runs_see_the_locations_they_share_and_only_those(tmp_path: Path) -> None:
    with (
        Peers(API, ["L1", "L2"], folder=tmp_path) as one,
        Peers(API, ["L2", "L3"], folder=tmp_path) as two,
    ):
        assert one.sharers("L2") == two.sharers("L2") == 2
        assert one.sharers("L1") == two.sharers("L3") == 1
        assert one.peers == two.peers == 1
        with Peers(API, ["L2"], folder=tmp_path):
            time.sleep(FRESH_S)
            assert one.sharers("L2", fresh=True) == 3
    assert not list(tmp_path.iterdir())  # both leases gone with their runs


def test_another_api_or_disjoint_locations_are_not_shared(tmp_path: Path) -> None:
    with (
        Peers(API, ["L1"], folder=tmp_path) as one,
        Peers("http://127.0.0.1:8100", ["L1"], folder=tmp_path),
        Peers(API, ["L9"], folder=tmp_path),
    ):
        assert one.sharers("L1") == 1
        assert one.peers == 0


def test_a_later_run_is_seen_within_the_refresh_or_at_once_when_fresh(tmp_path: Path) -> None:
    clock = Clock()
    with Peers(API, ["L1"], folder=tmp_path, clock=clock) as one:
        assert one.sharers("L1") == 1
        with Peers(API, ["L1"], folder=tmp_path):
            clock.now += FRESH_S / 2
            assert one.sharers("L1") == 1  # the view is still fresh enough
            clock.now += FRESH_S
            assert one.sharers("L1", fresh=True) == 2  # a first answer asks for a fresh view
        assert one.sharers("L1") == 2  # until the next read
        clock.now += REFRESH_S
        assert one.sharers("L1") == 1


def test_a_killed_runs_lease_is_forgotten_and_removed(tmp_path: Path) -> None:
    """``kill -9`` leaves the file but not its lock: the next reader removes it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from pipeline.send.peers import Peers\n"
            f"p = Peers({API!r}, ['L1'], folder=Path({str(tmp_path)!r})).__enter__()\n"
            "print('ready', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        clock = Clock()
        with Peers(API, ["L1"], folder=tmp_path, clock=clock) as mine:
            assert mine.sharers("L1") == 2
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=10)
            assert len(list(tmp_path.glob("*.lease"))) == 2  # the dead run's file is left
            clock.now += REFRESH_S
            assert mine.sharers("L1") == 1
            assert len(list(tmp_path.glob("*.lease"))) == 1  # ours only
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_that_cannot_be_written_means_no_peers_not_a_failed_run(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with Peers(API, ["L1"], folder=blocked / "leases") as peers:
        assert peers.sharers("L1") == 1


def test_a_run_with_nothing_to_send_leaves_no_lease(tmp_path: Path) -> None:
    with Peers(API, [], folder=tmp_path):
        assert not list(tmp_path.iterdir())


def test_a_location_done_is_taken_off_the_lease_and_its_share_given_back(tmp_path: Path) -> None:
    clock = Clock()
    with (
        Peers(API, ["L1", "L2"], folder=tmp_path, clock=clock) as one,
        Peers(API, ["L1", "L2"], folder=tmp_path, clock=clock) as two,
    ):
        assert one.sharers("L1") == one.sharers("L2") == 2
        two.done("L1")
        two.done("L1")  # twice: nothing more
        two.done("L9")  # never listed: nothing
        clock.now += REFRESH_S
        assert one.sharers("L1") == 1 and one.sharers("L2") == 2


def test_a_folder_others_may_write_is_not_trusted(tmp_path: Path) -> None:
    """In a shared /tmp, someone else's folder of that name could feed us leases."""
    shared = tmp_path / "leases"
    shared.mkdir()
    shared.chmod(0o777)
    with Peers(API, ["L1"], folder=shared) as one, Peers(API, ["L1"], folder=shared) as two:
        assert one.sharers("L1") == two.sharers("L1") == 1
    assert not list(shared.iterdir())
