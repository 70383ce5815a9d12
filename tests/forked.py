"""``vlrl`` runs in processes forked from a fork server that has imported vlrl's stack once (torch, transformers,
Lightning, vLLM): each run is a process of its own (its memory, its exit status, a SIGKILL that takes only it),
without the ~8 s of CPU it takes a new process to import that stack on the CI machine. The server is started on first
use in each test process and has never run a model: a forked run starts as clean as a new process (forking the test
process itself would carry over whatever earlier tests left, such as autograd's threads, which torch refuses to use
after a fork). For tests that start many runs (the resume tests kill one run after another); the installed command
is tested as a real subprocess elsewhere (tests/e2e/test_console_script.py, tests/e2e/test_resume_recipe.py)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["vlrl_cli", "lightning_modules.grpo", "tests.e2e.kills", "vllm"]


@dataclass
class Finished:
    returncode: int  # as subprocess gives it: the exit code, or -N for a process ended by signal N
    stdout: str
    stderr: str


def _run(argv: list[str], env: dict[str, str], cwd: str, folder: str) -> None:
    """In the forked process: stdout and stderr to files in ``folder``, the test process's environment over the
    server's (which keeps what the preloaded modules set, such as vLLM's), the working folder, then ``vlrl <argv>`` as
    the console script runs it (``vlrl_cli.entry``); leaves with ``os._exit`` and the run's exit status. What a module
    read from the environment when the server imported it stays as the server had it."""
    code = 1
    sys.argv = ["vlrl", *argv]  # what the command and its error messages see as the program
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(Path(folder, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's own streams, closed by _exit
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.environ.update(env)
        os.chdir(cwd)
        from vlrl_cli import entry

        code = entry(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)  # as Python prints a message given to sys.exit
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()  # flushes the handlers, some of which write to the streams of the server's start
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def fork_server() -> multiprocessing.context.BaseContext:
    """The fork server's context, its preload set (read when the server starts, on its first use in this process).
    ``tests.distributed`` starts its ranks from the same server."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class ForkedRun:
    """``vlrl <argv>`` (``vlrl_cli.entry``, the console script's function) started in a process forked from the
    server, in ``cwd`` (default: this process's working folder) with this process's environment, ``env`` added. A run
    on one process only: Lightning starts further ranks by running ``sys.argv`` again, which a forked run does not
    have. ``pid`` is the run's process; ``wait`` returns how it ended. As a context manager, a run not waited for is
    killed on the way out (a failing test does not leave it running)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> None:
        self._folder = tempfile.TemporaryDirectory()
        environment = {**os.environ, **(env or {})}
        self.argv = argv
        folder = str(cwd or os.getcwd())
        self.process = fork_server().Process(target=_run, args=(argv, environment, folder, self._folder.name))
        self.process.start()
        self.pid = self.process.pid

    def __enter__(self) -> ForkedRun:
        return self

    def __exit__(self, *exc) -> None:
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self._folder.cleanup()

    def wait(self, timeout: float = 600) -> Finished:
        """Waits at most ``timeout`` seconds; past it, the run is killed and ``TimeoutError`` raised."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            self._folder.cleanup()
            raise TimeoutError(f"vlrl {self.argv[0]} ran over {timeout} s")
        out = [Path(self._folder.name, name) for name in ("stdout", "stderr")]
        texts = [path.read_text(errors="replace") if path.exists() else "" for path in out]
        self._folder.cleanup()
        return Finished(self.process.exitcode, *texts)


def run_vlrl_forked(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 600, cwd: str | Path | None = None
) -> Finished:
    """``ForkedRun(argv, env, cwd).wait(timeout)``."""
    with ForkedRun(argv, env, cwd) as run:
        return run.wait(timeout)
