"""benchmarks/run_all.py: the results page is rebuilt from the sections' JSON files.

The fast tests swap the four benchmark modules for small fakes (so the page
logic, `--only`, failure reporting and the README blocks are checked in
milliseconds); the slow test runs the real modules with the smoke preset.
"""

import json
import os
import sys
import types

import pytest
import run_all


def _fake_module(name, calls, fail=False):
    mod = types.ModuleType(name)
    mod.PRESETS = {"smoke": {"n": 1}, "cpu": {"n": 2}, "paper": {"n": 3}}

    def run(preset="cpu", out_dir=None, progress=True):
        calls.append((name, preset))
        if fail:
            raise RuntimeError(f"{name} exploded")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "fig.png"), "wb") as f:
            f.write(b"\x89PNG")
        return {"preset": preset, "settings": mod.PRESETS[preset], "seconds": 1.5, "figures": ["fig.png"],
                "score": 0.25 * len(name)}

    def markdown(result, fig_prefix=""):
        return f"| score |\n|---|\n| {result['score']} |\n\n![fig]({fig_prefix}fig.png)"

    def headline(result):
        return f"score {result['score']}"

    mod.run, mod.markdown, mod.headline = run, markdown, headline
    return mod


@pytest.fixture
def fakes(monkeypatch):
    calls = []
    mods = {name: _fake_module(name, calls) for name in run_all.NAMES}
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods, calls


def test_page_has_every_section_from_the_run(fakes, tmp_path):
    _, calls = fakes
    assert run_all.main(["--preset", "cpu", "--results-dir", str(tmp_path), "--no-progress"]) == 0
    assert calls == [(name, "cpu") for name in run_all.NAMES]
    page = (tmp_path / "RESULTS.md").read_text()
    for name, title, _ in run_all.SECTIONS:
        assert f"## {title}" in page
        assert f"![fig](./{name}/fig.png)" in page
        score = json.loads((tmp_path / f"{name}.json").read_text())["results"]["score"]
        assert f"| {score} |" in page
        assert f"score {score}" in page  # headline
    assert "run_all.py --preset cpu --results-dir" in page
    assert "failed" not in page.lower()


def test_only_reruns_one_section_and_keeps_the_others(fakes, tmp_path):
    mods, calls = fakes
    run_all.main(["--preset", "cpu", "--results-dir", str(tmp_path), "--no-progress"])
    calls.clear()
    assert run_all.main(["--preset", "smoke", "--only", "qtips", "--results-dir", str(tmp_path)]) == 0
    assert calls == [("qtips", "smoke")]
    page = (tmp_path / "RESULTS.md").read_text()
    assert page.count("## ") >= len(run_all.SECTIONS)
    assert "(`smoke` preset)" in page and "(`cpu` preset)" in page


def test_a_failing_section_is_reported_and_the_rest_still_run(fakes, tmp_path, monkeypatch):
    mods, calls = fakes
    monkeypatch.setitem(sys.modules, "lse_vs_itk", _fake_module("lse_vs_itk", calls, fail=True))
    assert run_all.main(["--preset", "cpu", "--results-dir", str(tmp_path), "--no-progress"]) == 1
    assert [c[0] for c in calls] == list(run_all.NAMES)
    page = (tmp_path / "RESULTS.md").read_text()
    assert "This section failed" in page and "lse_vs_itk exploded" in page
    assert "score 1.25" in page  # qtips still there (0.25 * len("qtips"))


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope", "--results-dir", str(tmp_path)])
    assert "--only must name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_all.main(["--preset", "smoke"])  # would overwrite benchmarks/results
    assert "--results-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_all.main(["--preset", "huge", "--results-dir", str(tmp_path)])


def test_replace_block_is_idempotent(tmp_path):
    from _common import replace_block

    path = tmp_path / "README.md"
    path.write_text("# Title\n\nintro\n")
    replace_block(str(path), "results-headline", "first")
    replace_block(str(path), "results-headline", "second")
    text = path.read_text()
    assert text.startswith("# Title\n\nintro\n")
    assert text.count("<!-- BEGIN results-headline -->") == 1
    assert "second" in text and "first" not in text


@pytest.mark.slow
def test_smoke_preset_runs_every_real_section(tmp_path, eager_tf_functions):
    pytest.importorskip("itk")
    pytest.importorskip("nilearn")
    rc = run_all.main(["--preset", "smoke", "--results-dir", str(tmp_path), "--no-progress"])
    page = (tmp_path / "RESULTS.md").read_text()
    assert rc == 0, page
    assert "This section failed" not in page and "Not run yet" not in page
    for name, title, _ in run_all.SECTIONS:
        payload = json.loads((tmp_path / f"{name}.json").read_text())
        assert payload["results"]["preset"] == "smoke"
        for fig in payload["results"]["figures"]:
            assert (tmp_path / name / fig).is_file()
            assert f"./{name}/{fig}" in page
