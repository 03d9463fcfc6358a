"""Where the test suite's time goes: per-phase wall time, time per test file, the slowest tests.

`scripts/test.sh` runs each backend phase with `--junitxml=<dir>/<phase>.xml`
and then `python scripts/suite_durations.py <dir>`; run it by hand on the same
folder to see more (`--files 40 --tests 30`). Two numbers per test:

* wall: pytest's duration (setup + call + teardown);
* CPU: the `cpu_s` property `tests/conftest.py` records (CPU seconds of the
  test's process, its threads and its finished subprocesses). CPU time barely
  changes when other work shares the cores, so on a busy machine
  `sum(CPU) / cores` estimates the phase's wall time on a quiet one (with as
  many pytest workers as cores, each test using one core).
"""

import argparse
import collections
import json
import os
import sys
import xml.etree.ElementTree as ET


def read_phase(path):
    """`[(file, test name, wall seconds, CPU seconds or None)]` of one junit XML report."""
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "")
        file = case.get("file") or classname.replace(".", "/") + ".py"
        cpu = [float(p.get("value")) for p in case.iter("property") if p.get("name") == "cpu_s"]
        rows.append((file, f"{classname}::{case.get('name')}", float(case.get("time") or 0.0),
                     cpu[0] if cpu else None))
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
    cores = os.cpu_count() or 1
    lines = []
    for name, rows in phases.items():
        wall_per_file, cpu_per_file = collections.Counter(), collections.Counter()
        for file, _, sec, cpu in rows:
            wall_per_file[file] += sec
            cpu_per_file[file] += cpu or 0.0
        cpu_total = sum(cpu or 0.0 for *_, cpu in rows)
        wall = walls.get(name)
        lines.append(f"== {name}: {len(rows)} tests, {sum(r[2] for r in rows) / 60:.1f} test-min wall, "
                     f"{cpu_total / 60:.1f} CPU-min (quiet {cores}-core estimate {cpu_total / cores / 60:.1f} min)"
                     + (f", {wall / 60:.1f} min wall" if wall else ""))
        lines.append(f"   slowest files (sum over their tests, top {n_files}):   wall s     CPU s")
        lines += [f"   {file:<52} {sec:8.1f}  {cpu_per_file[file]:8.1f}"
                  for file, sec in wall_per_file.most_common(n_files)]
    every = sorted(((cpu if cpu is not None else sec, sec, name, test) for name, rows in phases.items()
                    for _, test, sec, cpu in rows), reverse=True)
    lines.append(f"== {n_tests} tests with the most CPU time over all phases (CPU s, wall s):")
    lines += [f"   {cpu:8.1f} {sec:8.1f}  [{name}] {test}" for cpu, sec, name, test in every[:n_tests]]
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
