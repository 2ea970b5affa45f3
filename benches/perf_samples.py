"""Counts `perf script -F ip,dso` samples in user space and in the kernel.

Usage: python3 benches/perf_samples.py DSOS_FILE  ->  prints "USER KERNEL".
Used by the sampled CPU benchmarks (benches/echo/sampled_cpu.sh, benches/load/sampled.sh).
"""

import sys

kernel = user = 0
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    if "kernel.kallsyms" in line:
        kernel += 1
    else:
        user += 1
print(user, kernel)
