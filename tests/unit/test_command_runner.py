import sys
from pathlib import Path

import pytest

from slurm.command_runner import CommandFailed, SubprocessCommandRunner
from slurm.errors import SlurmUnavailable


def python_argv(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_returns_stdout() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    assert runner.run(python_argv("print('hello')")) == "hello\n"


def test_arguments_are_not_shell_interpreted() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    out = runner.run([*python_argv("import sys; print(sys.argv[1])"), "$HOME; echo pwned"])
    assert out == "$HOME; echo pwned\n"


def test_missing_program_is_unavailable() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    with pytest.raises(SlurmUnavailable, match="no-such-slurm-binary: command not found") as excinfo:
        runner.run(["no-such-slurm-binary"])
    assert isinstance(excinfo.value.__cause__, FileNotFoundError)


def test_bin_dir_is_used_to_find_the_program(tmp_path: Path) -> None:
    script = tmp_path / "fake-scontrol"
    script.write_text("#!/bin/sh\necho from-bin-dir\n")
    script.chmod(0o755)
    runner = SubprocessCommandRunner(timeout_s=10, bin_dir=tmp_path)
    assert runner.run(["fake-scontrol"]) == "from-bin-dir\n"


def test_timeout_is_unavailable() -> None:
    runner = SubprocessCommandRunner(timeout_s=0.2)
    with pytest.raises(SlurmUnavailable, match=r"timed out after 0\.2s"):
        runner.run(python_argv("import time; time.sleep(10)"))


def test_non_zero_exit_summarises_first_stderr_line() -> None:
    code = (
        "import sys; sys.stderr.write('\\n  scontrol:   error: Unable   to contact\\nsecond line\\n'); "
        "sys.exit(1)"
    )
    runner = SubprocessCommandRunner(timeout_s=10)
    with pytest.raises(SlurmUnavailable) as excinfo:
        runner.run(python_argv(code))
    assert str(excinfo.value).endswith(": scontrol: error: Unable to contact")


def test_non_zero_exit_without_stderr_uses_status_and_stdout() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    code = "import sys; print('Slurmctld(primary) at h is DOWN'); sys.exit(1)"
    with pytest.raises(SlurmUnavailable, match=r"exited with status 1: Slurmctld\(primary\) at h is DOWN"):
        runner.run(python_argv(code))


def test_long_stderr_is_truncated() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    with pytest.raises(SlurmUnavailable) as excinfo:
        runner.run(python_argv("import sys; sys.stderr.write('e' * 10000); sys.exit(3)"))
    assert len(str(excinfo.value)) < 300


def test_empty_argv_is_rejected() -> None:
    with pytest.raises(ValueError, match="argv"):
        SubprocessCommandRunner(timeout_s=1).run([])


def test_stdin_is_passed_to_the_program() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    assert runner.run(python_argv("import sys; print(sys.stdin.read().upper())"), stdin="abc") == "ABC\n"


def test_env_replaces_the_environment() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    code = "import os; print(os.environ['SGW_TEST_VAR'], 'HOME' in os.environ)"
    assert runner.run(python_argv(code), env={"SGW_TEST_VAR": "x"}) == "x False\n"


def test_capture_returns_stderr_of_a_successful_command() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    output = runner.capture(python_argv("import sys; print('out'); sys.stderr.write('err\\n')"))
    assert (output.stdout, output.stderr) == ("out\n", "err\n")


def test_non_zero_exit_keeps_full_stderr_and_status() -> None:
    runner = SubprocessCommandRunner(timeout_s=10)
    code = "import sys; sys.stderr.write('first\\nsecond\\n'); sys.exit(4)"
    with pytest.raises(CommandFailed) as excinfo:
        runner.run(python_argv(code))
    assert (excinfo.value.returncode, excinfo.value.stderr, excinfo.value.program) == (
        4,
        "first\nsecond\n",
        sys.executable,
    )
    assert isinstance(excinfo.value, SlurmUnavailable)
