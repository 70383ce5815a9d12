"""``vlrl`` runs in a child process forked from the test's own: a process of its own as far as the run is concerned
(its memory, its exit status, a SIGKILL that takes only it), without importing torch, transformers, Lightning and
vLLM again, which costs about 8 s of CPU a process on the CI machine. For tests that start many runs (the resume
tests kill one run after another); the installed command itself is tested as a real subprocess elsewhere
(tests/e2e/test_console_script.py, tests/e2e/test_resume_recipe.py)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass


@dataclass
class Finished:
    returncode: int  # as subprocess gives it: the exit code, or -N for a process ended by signal N
    stderr: str


def _child(argv: list[str], env: dict[str, str], stderr_fd: int) -> None:
    """In the forked child: stdout to /dev/null, stderr to the parent's file, then ``vlrl_cli.main(argv)``. Never
    returns: the child leaves with ``os._exit``, so nothing of the parent's (pytest's exit handlers) runs in it."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(stderr_fd, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child's own streams, closed by _exit
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.environ.update(env)
        from vlrl_cli import main

        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def run_vlrl_forked(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> Finished:
    """``vlrl <argv>`` (``vlrl_cli.main``) in a forked child with ``env`` added to its environment; waits for it (at
    most ``timeout`` seconds, then kills it and raises ``TimeoutError``)."""
    with tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(argv, env or {}, err.fileno())
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"vlrl {' '.join(argv[:1])} ran over {timeout} s")
            time.sleep(0.05)
        err.seek(0)
        return Finished(os.waitstatus_to_exitcode(status), err.read().decode(errors="replace"))
