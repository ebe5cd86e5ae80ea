"""`tellme bench busy` runs its three settings quiet and with a core taken, and restores the
thread setting it found (no speed is asserted: the machine may be busy)."""

import pytest

from tellme.cli import main
from tellme.runtime import physical_cores, thread_setting


@pytest.mark.skipif(physical_cores() < 2, reason="one physical core: no team to compare")
def test_bench_busy_prints_every_setting(capsys):
    before = thread_setting()
    assert main(["bench", "busy", "--shape", "0.73B", "--layers", "1", "--repeats", "1", "--decode-tokens", "2"]) == 0
    out = capsys.readouterr().out
    for text in ("quiet", "one core spinning", "prefill", "decode", "auto:"):
        assert text in out, text
    assert thread_setting() == before


def test_bench_busy_bad_arguments(capsys):
    assert main(["bench", "busy", "--repeats", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err
