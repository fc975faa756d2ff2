"""StopSignals: the first SIGINT or SIGTERM is noted for the loop to read, a second interrupts at once, and the
earlier handlers come back."""

import os
import signal

import pytest

from free_atm.training.stopping import StopSignals


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_asks_the_loop_to_stop_and_a_second_interrupts(number, capsys):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals("train.py") as stop:
        assert stop.received is None
        os.kill(os.getpid(), number)  # delivered to the main thread before the next line runs
        assert stop.received == number and stop.exit_status == 128 + number
        assert capsys.readouterr().err == (
            f"train.py: {number.name} received; stopping after the step under way (again: at once)\n"
        )
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before


def test_the_exit_status_needs_a_signal():
    with pytest.raises(ValueError, match="no stopping signal was received"):
        _ = StopSignals("train.py").exit_status
