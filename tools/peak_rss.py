#!/usr/bin/env python
"""Run a command and report its peak memory: the largest single process (like
``/usr/bin/time -f %M``) and the peak of the whole process tree summed (the
command plus its children, e.g. aecodec's entropy-decoder worker), sampled
every 50 ms from /proc (Linux).

    python tools/peak_rss.py -- aecodec compress big.png -o big.aec -f
    python tools/peak_rss.py --json -- aecodec decompress big.aec -o back.png -f
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def measure(cmd, interval: float = 0.05):
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    peak_tree = 0
    while proc.poll() is None:
        peak_tree = max(peak_tree, sum(_rss_kib(p) for p in _tree(proc.pid)))
        time.sleep(interval)
    wall = time.time() - t0
    max_single = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return {"returncode": proc.returncode, "wall_s": round(wall, 1),
            "peak_rss_largest_process_MiB": round(max_single / 1024, 1),
            "peak_rss_process_tree_MiB": round(max(peak_tree, max_single) / 1024, 1)}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv[:argv.index("--")] if "--" in argv else False
    if "--" not in argv:
        if {"-h", "--help"} & set(argv):  # asked for: the usage on stdout, exit 0
            print(__doc__.strip())
            return 0
        print(__doc__.strip(), file=sys.stderr)
        print("error: give the command to measure after --", file=sys.stderr)
        return 2
    if not argv[argv.index("--") + 1:]:
        print("error: no command after --", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1:]
    r = measure(cmd)
    if as_json:
        print(json.dumps(r))
    else:
        print(f"exit {r['returncode']}, {r['wall_s']} s, peak RSS {r['peak_rss_largest_process_MiB']} MiB "
              f"(largest process), {r['peak_rss_process_tree_MiB']} MiB (process tree)", file=sys.stderr)
    return r["returncode"]


if __name__ == "__main__":
    sys.exit(main())
