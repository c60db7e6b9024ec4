"""Branch probes that may hang (Lanes: deadlines, fail-fast while stalled) and
branch roots whose filesystem went away (Probe.check_gone)."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from mergerfs import lanes as lanes_mod
from mergerfs.branches import Branch
from mergerfs.lanes import Lanes, Stalled
from mergerfs.probe import Probe


def test_lane_answers_and_passes_errors():
    lanes = Lanes()
    assert lanes.call("/b", 1.0, lambda x: x * 2, 21) == 42
    with pytest.raises(FileNotFoundError):
        lanes.call("/b", 1.0, os.stat, "/nonexistent/x")
    assert lanes.direct("/b", 1.0, lambda: 7) == 7


def test_stalled_branch_times_out_then_fails_fast_then_recovers():
    lanes = Lanes()
    release = threading.Event()
    t0 = time.monotonic()
    with pytest.raises(Stalled) as e:
        lanes.call("/hung", 0.2, release.wait, 5)
    assert e.value.errno == errno.EIO
    assert 0.15 < time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    with pytest.raises(Stalled):  # the call past its deadline is still running: no wait
        lanes.call("/hung", 0.2, lambda: 1)
    with pytest.raises(Stalled):
        lanes.direct("/hung", 0.2, lambda: 1)
    assert time.monotonic() - t0 < 0.1
    assert lanes.call("/other", 0.2, lambda: "fine") == "fine"  # other branches unaffected
    release.set()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            assert lanes.call("/hung", 0.2, lambda: "back") == "back"
            break
        except Stalled:
            time.sleep(0.02)
    else:
        pytest.fail("the branch never came back")


def test_interrupted_wait_ends_at_once_and_drops_the_queued_rest():
    """The request a thread serves is interrupted (the kernel's INTERRUPT sets
    its Event): its wait on a hung lane ends with EINTR well before the
    deadline, and a job of it still queued never runs."""
    lanes = Lanes(width=1)
    release = threading.Event()
    ran: list[str] = []
    interrupt = lanes_mod.serving.interrupt = threading.Event()
    try:
        threading.Timer(0.2, interrupt.set).start()
        t0 = time.monotonic()
        with pytest.raises(InterruptedError) as e:
            lanes.calls([("/hung", release.wait, (5,)), ("/hung", ran.append, ("queued",))], 5.0)
        assert e.value.errno == errno.EINTR
        assert 0.15 < time.monotonic() - t0 < 1.0
    finally:
        lanes_mod.serving.interrupt = None
        release.set()
    assert lanes.call("/hung", 1.0, lambda: "next") == "next"  # the lane's one thread is free again
    assert ran == []


def test_direct_call_that_hangs_marks_the_branch_stalled():
    lanes = Lanes()
    release = threading.Event()
    t = threading.Thread(target=lanes.direct, args=("/b", 0.1, release.wait, 5))
    t.start()
    try:
        time.sleep(0.3)
        with pytest.raises(Stalled):
            lanes.call("/b", 1.0, lambda: 1)
    finally:
        release.set()
        t.join(5)
    assert lanes.call("/b", 1.0, lambda: 1) == 1


def test_gone_only_when_a_mount_of_its_own_now_sits_on_its_parent(tmp_path):
    root = str(tmp_path / "b")
    os.mkdir(root)
    here = os.stat(root).st_dev
    probe = Probe()
    b = Branch(root, "RW", 0)
    probe.record([b])
    assert probe.space(b).gone is False  # a plain directory: never "gone"
    probe._origin[root] = (here + 1000, True)  # as if it had been a mount when recorded
    assert probe.check_gone(root, here) is True and probe.gone() == [root]
    assert probe.space(b).gone is True
    assert probe.check_gone(root, here + 2000) is False  # mounted again, new device
    assert probe.gone() == []
    assert probe._origin[root] == (here + 2000, True)


def test_reconfigured_probe_keeps_origins(tmp_path):
    root = str(tmp_path / "b")
    os.mkdir(root)
    old = Probe()
    old._origin[root] = (1, True)
    old._gone.add(root)
    new = Probe(lanes=old.lanes)
    new.record([Branch(root, "RW", 0)], keep=old)
    assert new._origin[root] == (1, True) and new.gone() == [root]


def test_calls_wait_once_for_all():
    lanes = Lanes()
    release = threading.Event()
    t0 = time.monotonic()
    out = lanes.calls(
        [
            ("/a", lambda: "a", ()),
            ("/hung", release.wait, (5,)),
            ("/hung2", release.wait, (5,)),
            ("/b", os.stat, ("/nonexistent/x",)),
        ],
        0.3,
    )
    took = time.monotonic() - t0
    release.set()
    assert out[0] == "a"
    assert isinstance(out[1], Stalled) and isinstance(out[2], Stalled)
    assert isinstance(out[3], FileNotFoundError)
    assert took < 0.6  # one deadline for all, not one each
