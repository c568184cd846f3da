"""The project's argparse commands (``aecodec train``, the tools/ scripts) report usage
errors as the click commands do: one line naming --help, exit status 2."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints its whole usage first; the rest of aecodec does not
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_main(main) -> int:
    """``main()``'s exit status, or 141 (as a shell reports SIGPIPE) without a traceback when
    the reader of stdout went away, as ``python tools/rdcompare.py ... | head`` does."""
    import os
    import sys

    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
