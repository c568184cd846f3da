"""The project's argparse commands (``aecodec train``, the tools/ scripts) report usage
errors as the click commands do: one line naming --help, exit status 2; and, like the
click commands, a stdout that cannot be written (``> /dev/full``) is one line and exit 1,
a stdout whose reader went away (``| head``) exit 141, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints its whole usage first; the rest of aecodec does not
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message, file=None):
        # argparse drops a failed write of --help silently (exit 0, nothing shown): on stdout,
        # let it raise, so that run_main (or the click group) reports it in one line
        if message:
            file = file or sys.stderr
            try:
                file.write(message)
            except (AttributeError, OSError):
                if file is sys.stdout:
                    raise


def stdout_failed(e: OSError, prog: str = "aecodec") -> int:
    """Report in one line on stderr that stdout cannot be written; returns the exit status,
    1.  Stdout is pointed at /dev/null first, so that Python's own flush at exit does not
    print a second error."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    print(f"{prog}: error: <stdout>: cannot write ({e.strerror or e})", file=sys.stderr)
    return 1


def writes_stdout(e: BaseException) -> bool:
    """Whether ``e`` was raised writing to stdout (file descriptor 1): marked so by
    run_main's stdout, or raised in a frame that holds that stream (click's echo,
    argparse's help)."""
    if getattr(e, "aecodec_stdout", False):
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    for v in list(tb.tb_frame.f_locals.values()):
        try:
            if hasattr(v, "write") and v.fileno() == 1:
                return True
        except Exception:  # not a real file: a test runner's buffer, a closed stream
            pass
    return False


def flush_stdout(prog: str = "aecodec"):
    """Flush stdout now, while a failure can still be reported: None, or the exit status
    after one (see stdout_failed).  A closed pipe is raised (BrokenPipeError)."""
    if sys.stdout is None:  # no stdout at all (started with fd 1 closed): nothing to flush
        return None
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        return stdout_failed(e, prog)
    return None


class _MarkedStdout:
    """sys.stdout, with the errors of its writes marked as such (print() raises them from C,
    with no frame that shows the stream)."""

    def __init__(self, stream):
        self._stream = stream

    def _mark(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            e.aecodec_stdout = True
            raise

    def write(self, text):
        return self._mark(self._stream.write, text)

    def flush(self):
        return self._mark(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def run_main(main, prog: str | None = None) -> int:
    """``main()``'s exit status, or 141 (as a shell reports SIGPIPE) without a traceback when
    the reader of stdout went away, as ``python tools/rdcompare.py ... | head`` does; 1 with
    one line when stdout cannot be written (``> /dev/full``), --help included."""
    prog = prog or (os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "aecodec")
    real = sys.stdout
    if real is not None:  # None: started with fd 1 closed; argparse's help then goes to stderr
        sys.stdout = _MarkedStdout(real)
    try:
        try:
            rc = main()
        except SystemExit:  # argparse's --help and errors: flush while it can be reported
            failed = flush_stdout(prog)
            if failed is not None:
                return failed
            raise
        failed = flush_stdout(prog)
        return rc if failed is None else failed
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    except OSError as e:
        if not writes_stdout(e):
            raise
        return stdout_failed(e, prog)
    finally:
        sys.stdout = real
