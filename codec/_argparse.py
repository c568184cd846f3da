"""The project's argparse commands (``aecodec train``, the tools/ scripts) report usage
errors as the click commands do: one line naming --help, exit status 2."""

from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints its whole usage first; the rest of aecodec does not
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
