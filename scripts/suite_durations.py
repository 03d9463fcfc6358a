"""Where the test suite's time goes: per-phase wall time, time per test file, the slowest tests.

`scripts/test.sh` runs each backend phase with `--junitxml=<dir>/<phase>.xml`
and then `python scripts/suite_durations.py <dir>`; run it by hand on the same
folder to see more (`--files 40 --tests 30`). Times are pytest's per-test
durations (setup + call + teardown) summed over the tests of a file; with
`-n 2` two files run at once, so the per-file sums add up to about twice the
phase's wall time.
"""

import argparse
import collections
import json
import os
import sys
import xml.etree.ElementTree as ET


def read_phase(path):
    """`[(file, test name, seconds)]` of one junit XML report."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "")
        file = case.get("file") or classname.replace(".", "/") + ".py"
        rows.append((file, f"{classname}::{case.get('name')}", float(case.get("time") or 0.0)))
    return rows


def summarise(folder, n_files=15, n_tests=10):
    phases = {}
    for name in ("tensorflow", "jax", "torch"):
        path = os.path.join(folder, f"{name}.xml")
        if os.path.exists(path):
            phases[name] = read_phase(path)
    walls = {}
    wall_path = os.path.join(folder, "wall.json")
    if os.path.exists(wall_path):
        with open(wall_path) as f:
            walls = json.load(f)
    lines = []
    for name, rows in phases.items():
        per_file = collections.Counter()
        for file, _, sec in rows:
            per_file[file] += sec
        wall = walls.get(name)
        lines.append(f"== {name}: {len(rows)} tests, {sum(s for *_, s in rows) / 60:.1f} test-min"
                     + (f", {wall / 60:.1f} min wall" if wall else ""))
        lines.append(f"   slowest files (sum of test durations, top {n_files}):")
        lines += [f"   {sec:8.1f} s  {file}" for file, sec in per_file.most_common(n_files)]
    every = sorted(((sec, name, test) for name, rows in phases.items() for _, test, sec in rows), reverse=True)
    lines.append(f"== slowest {n_tests} tests over all phases:")
    lines += [f"   {sec:8.1f} s  [{name}] {test}" for sec, name, test in every[:n_tests]]
    if walls:
        lines.append("== phase wall times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items()))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder with tensorflow.xml, jax.xml, torch.xml (and wall.json)")
    parser.add_argument("--files", type=int, default=15, help="slowest files per phase to list (default 15)")
    parser.add_argument("--tests", type=int, default=10, help="slowest tests overall to list (default 10)")
    args = parser.parse_args(argv)
    print(summarise(args.folder, args.files, args.tests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
