"""The kubelet's image pull back-off (flowcontrol.Backoff semantics)."""

from __future__ import annotations

from kubesim.controllers.backoff import Backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_doubles_up_to_the_maximum() -> None:
    clock = Clock()
    backoff = Backoff(10, 300, clock=clock)
    delays = []
    for _ in range(8):
        delays.append(backoff.next("pod_img"))
        clock.now += 1
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]


def test_in_backoff_until_the_delay_passed() -> None:
    clock = Clock()
    backoff = Backoff(10, 300, clock=clock)
    assert not backoff.in_backoff("k")
    backoff.next("k")
    assert backoff.in_backoff("k")
    clock.now += 9.5
    assert backoff.remaining("k") == 0.5
    clock.now += 0.5
    assert not backoff.in_backoff("k")


def test_resets_after_twice_the_maximum_without_failures() -> None:
    clock = Clock()
    backoff = Backoff(1, 4, clock=clock)
    for _ in range(4):
        backoff.next("k")
    assert backoff.delay("k") == 4
    clock.now += 8.5
    assert backoff.next("k") == 1


def test_keys_are_independent_and_forgettable() -> None:
    backoff = Backoff(1, 4, clock=Clock())
    backoff.next("uid1_a")
    backoff.next("uid1_a")
    backoff.next("uid2_a")
    assert backoff.delay("uid1_a") == 2 and backoff.delay("uid2_a") == 1
    backoff.forget_prefix("uid1_")
    assert backoff.delay("uid1_a") == 0 and len(backoff) == 1
