"""`recap-data ARGS` that prints, at exit, this process's rank and peak RSS (KB) to stderr as
`peak_rss <rank> <kb>`: run under torchrun, each process reports its own (bench_label_processes.py)."""

import atexit
import os
import resource
import sys

from recap_data.cli.main import main

atexit.register(lambda: print("peak_rss", os.environ.get("RANK", "0"),
                              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))
main()
