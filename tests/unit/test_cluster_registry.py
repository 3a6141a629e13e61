"""The cluster's task registry as a plain object (Ray only makes it an actor): queue places, interrupts by id,
and a task interrupted while it waits being refused when a replica would start it."""

from retouch.cluster.registry import TaskRegistry
from retouch.cluster.worker import take_flags
from retouch.control import JobControl


def test_a_jobs_control_takes_every_interrupt_the_registry_counted():
    control = JobControl()
    take_flags(control, {"interrupted": True, "interrupts": 2, "skipped": False})
    assert control.interrupted and control.interrupts == 2 and not control.skipped
    take_flags(control, {"interrupted": True, "interrupts": 2, "skipped": True})
    assert control.interrupts == 2 and control.skipped


def test_a_task_interrupted_while_waiting_is_refused_at_start_and_others_are_not():
    registry = TaskRegistry()
    for task in ("a", "b", "c"):
        registry.submitted(task)
    assert registry.lookup("b") == {"queue_position": (2, 3)}
    assert registry.interrupt("b") and not registry.interrupt("unknown")
    assert registry.started("a", "replica-1", 1) is True
    assert registry.started("b", "replica-2", 2) is False  # never runs
    assert "b" not in registry.running and registry.pending() == ["c"]
    assert registry.progress("a", {"sampling_step": 1}) == {"interrupted": False, "interrupts": 0, "skipped": False}


def test_interrupting_a_running_task_reaches_its_next_step_and_skip_only_once():
    registry = TaskRegistry()
    registry.submitted("a")
    assert registry.started("a", "replica-1", 1)
    registry.skip()
    assert registry.progress("a", {}) == {"interrupted": False, "interrupts": 0, "skipped": True}
    assert registry.progress("a", {}) == {"interrupted": False, "interrupts": 0, "skipped": False}
    registry.interrupt(None)
    assert registry.progress("a", {}) == {"interrupted": True, "interrupts": 1, "skipped": False}
    registry.interrupt("a")  # a second interrupt is counted: it stops the partial image's decode as well
    assert registry.progress("a", {})["interrupts"] == 2
    registry.done("a")
    assert registry.lookup("a") == {"completed": True}
