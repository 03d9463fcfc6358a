"""The benchmark scripts live in `benchmarks/` (not a package): put it on sys.path for these tests.

ITK runs on one thread here (`ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`, read when ITK starts; a value the caller set
wins): its sparse-field geodesic active contour synchronises its threads every iteration, and on these small
images two threads cost 100x the CPU of one on 2 AMD EPYC cores (the cell image of `lse_vs_itk`, 990 iterations:
16.4 CPU s and 42 s wall against 0.1 CPU s and 0.2 s, same segmentation). The tests check the segmentations, not
ITK's speed; the benchmarks' own runs keep ITK's default.
"""

import os
import sys

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
