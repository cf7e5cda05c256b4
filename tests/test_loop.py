"""The render loop's pacing on a fake clock, and its one thread with real views; the worker."""

from __future__ import annotations

import threading
import time

import pytest

from aivvm_magic.rendering.loop import DISPLAY_SHARE, MIN_INTERVAL, RenderLoop
from aivvm_magic.worker import Worker


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingView:
    """A view with new text whenever ``grow()`` is called; each draw costs ``cost`` seconds
    of the fake clock."""

    def __init__(self, clock: FakeClock, cost: float = 0.0, poll: float | None = 0.01) -> None:
        self.clock = clock
        self.cost = cost
        self.poll = poll
        self.version = 0
        self.shown = -1
        self.draws: list[float] = []

    def grow(self) -> None:
        self.version += 1

    def wants_draw(self, now: float) -> bool:
        return self.version != self.shown

    def poll_interval(self) -> float | None:
        return self.poll

    def draw(self, now: float) -> None:
        self.draws.append(now)
        self.shown = self.version
        self.clock.now += self.cost


def run_for(loop: RenderLoop, clock: FakeClock, seconds: float, grow: list[CountingView]) -> None:
    """Look at the views every millisecond for ``seconds``, each growing every time."""
    end = clock.now + seconds
    while clock.now < end:
        for view in grow:
            view.grow()
        loop.run_once()
        clock.now += 0.001


def test_a_view_with_new_text_all_the_time_is_drawn_20_times_a_second_at_most():
    clock = FakeClock()
    loop = RenderLoop(clock=clock, threaded=False)
    view = CountingView(clock)
    loop.add(view)
    try:
        run_for(loop, clock, 2.0, [view])
    finally:
        loop.close()
    assert 39 <= len(view.draws) <= 41
    gaps = [b - a for a, b in zip(view.draws, view.draws[1:], strict=False)]
    assert min(gaps) >= MIN_INTERVAL - 1e-9


def test_a_costly_draw_waits_in_proportion_to_its_cost():
    clock = FakeClock()
    loop = RenderLoop(clock=clock, threaded=False)
    view = CountingView(clock, cost=0.02)  # 20 ms a draw: then 0.4 s of rest
    loop.add(view)
    try:
        run_for(loop, clock, 2.0, [view])
    finally:
        loop.close()
    gaps = [b - a for a, b in zip(view.draws, view.draws[1:], strict=False)]
    assert gaps and min(gaps) >= 0.02 / DISPLAY_SHARE - 1e-9
    # The views' share of the time stays at about DISPLAY_SHARE.
    assert len(view.draws) * 0.02 <= 2.0 * DISPLAY_SHARE + 0.02


def test_views_are_paced_each_on_its_own():
    clock = FakeClock()
    loop = RenderLoop(clock=clock, threaded=False)
    cheap, costly = CountingView(clock), CountingView(clock, cost=0.01)
    loop.add(cheap)
    loop.add(costly)
    try:
        run_for(loop, clock, 1.0, [cheap, costly])
    finally:
        loop.close()
    assert len(cheap.draws) > 2 * len(costly.draws) >= 2


def test_a_view_with_nothing_new_is_not_drawn_and_an_idle_loop_sleeps_until_woken():
    clock = FakeClock()
    loop = RenderLoop(clock=clock, threaded=False)
    view = CountingView(clock, poll=None)
    loop.add(view)
    try:
        assert loop.run_once() is None and view.draws == [0.0]  # the first draw
        clock.now = 5.0
        assert loop.run_once() is None and len(view.draws) == 1
        view.grow()
        loop.run_once()
        assert view.draws == [0.0, 5.0]
    finally:
        loop.close()


def test_one_thread_draws_every_view_and_draw_now_waits_for_the_draw():
    loop = RenderLoop(name="test-render")
    views = [CountingView(FakeClock(), poll=None) for _ in range(5)]
    try:
        for view in views:
            loop.add(view)
        threads = [t for t in threading.enumerate() if t.name == "test-render"]
        assert len(threads) == 1
        for view in views:
            view.grow()
            assert loop.draw_now(view)
            assert view.shown == view.version
        assert loop.draws >= len(views)
    finally:
        loop.close()
    assert not loop.running


def test_remove_waits_for_a_draw_in_progress():
    loop = RenderLoop()
    started, release = threading.Event(), threading.Event()

    class Slow(CountingView):
        def draw(self, now: float) -> None:
            started.set()
            release.wait(5)
            super().draw(now)

    view = Slow(FakeClock())
    try:
        loop.add(view)
        assert started.wait(5)
        assert not loop.remove(view, timeout=0.05)  # still drawing
        release.set()
        assert loop.remove(view, timeout=5)
        drawn = len(view.draws)
        view.grow()
        loop.wake()
        time.sleep(0.1)
        assert len(view.draws) == drawn  # not drawn again once removed
    finally:
        release.set()
        loop.close()


def test_a_view_that_fails_to_draw_is_dropped_and_the_others_go_on(caplog):
    clock = FakeClock()
    loop = RenderLoop(clock=clock, threaded=False)

    class Broken(CountingView):
        def draw(self, now: float) -> None:
            raise RuntimeError("comm closed")

    broken, fine = Broken(clock), CountingView(clock)
    loop.add(broken)
    loop.add(fine)
    try:
        loop.run_once()
        assert broken not in loop and fine in loop and fine.draws
        assert "failed to draw" in caplog.text
    finally:
        loop.close()


def test_the_worker_runs_calls_in_order_and_a_queued_one_can_be_cancelled():
    worker = Worker("test-worker")
    gate = threading.Event()
    order: list[str] = []
    try:
        first = worker.submit(lambda: (gate.wait(5), order.append("first")))
        second = worker.submit(order.append, "second")
        third = worker.submit(order.append, "third")
        assert second.cancel()
        gate.set()
        third.result(5)
        assert first.done() and second.cancelled() and order == ["first", "third"]
        assert all(t.daemon for t in threading.enumerate() if t.name == "test-worker")
        failing = worker.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(5)
    finally:
        worker.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(print)


def test_draw_soon_skips_the_pace_once():
    clock = FakeClock()
    loop = RenderLoop(clock=clock, threaded=False)
    view = CountingView(clock)
    loop.add(view)
    try:
        loop.run_once()
        view.grow()
        clock.now = 0.001
        loop.run_once()
        assert len(view.draws) == 1  # paced: 50 ms between draws
        loop.draw_soon(view)
        loop.run_once()
        assert view.draws == [0.0, 0.001]
    finally:
        loop.close()


def test_draw_soon_during_a_draw_is_not_lost():
    """The first text that arrives while the view is being drawn (showing the widget, say) is
    drawn at the next pass, not a whole pace later."""
    clock = FakeClock()
    loop = RenderLoop(clock=clock, threaded=False)

    class Showing(CountingView):
        def draw(self, now: float) -> None:
            if not self.draws:
                self.grow()
                loop.draw_soon(self)  # the reply's first text, arriving meanwhile
            super().draw(now)

    view = Showing(clock)
    loop.add(view)
    try:
        loop.run_once()
        clock.now = 0.002
        loop.run_once()
        assert view.draws == [0.0, 0.002]
    finally:
        loop.close()
