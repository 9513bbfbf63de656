"""The ranking-quality harness end to end on a tiny real ViT and the embedded images: files and schema."""

from __future__ import annotations

import json

import pytest

from gohsp_lightning import rank_quality

from .conftest import TINY_MODEL


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("rq")
    args = ["--out", str(out), "--images", "300", "--calibration-images", "48", "--resamples", "100", "--curves", "2"]
    assert rank_quality.main([*args, *TINY_MODEL[:-1], "data.num_workers=0"]) == 0
    return out, json.loads((out / "rank_quality.json").read_text())


def test_writes_json_markdown_and_plot(result):
    out, data = result
    assert (out / "rank_quality.md").read_text().startswith("# Ranking quality")
    assert (out / "rank_quality.png").read_bytes()[:4] == b"\x89PNG"
    assert data["images"] == 300 and data["calibration_images"] == 48
    assert "random init" in data["checkpoint"]


def test_json_follows_the_schema(result):
    _, data = result
    heads = [4, 4, 4]
    assert isinstance(data["checkpoint"], str) and isinstance(data["images"], int)
    for key in ("delta_ce", "delta_top1"):
        assert [len(b) for b in data["ablation"][key]] == heads
    assert {"graph", "magnitude", "taylor", "random"} <= set(data["rankers"])
    formulations = [n for n in data["rankers"] if n.startswith("graph:")]
    assert len(formulations) == len(rank_quality.formulation_grid(rank_quality.GraphOptions()))
    for name, r in data["rankers"].items():
        assert [len(b) for b in r["head_scores"]] == heads, name
        assert -1 <= r["spearman"] <= 1
        lo, hi = r["spearman_ci"]
        assert -1 <= lo <= hi <= 1
        assert r["partial_spearman"] is None or -1 - 1e-9 <= r["partial_spearman"] <= 1 + 1e-9
        assert -1 <= r["retest"] <= 1
    assert "stationary" in data["rankers"]["graph"]
    # magnitude and random do not look at data: the two calibration sets give the same order
    assert data["rankers"]["magnitude"]["retest"] == 1.0 and data["rankers"]["random"]["retest"] == 1.0
    # the magnitude ranking is the weight norm itself: nothing is left beyond the norm
    assert data["rankers"]["magnitude"]["partial_spearman"] is None
    # curves for the four base rankers and the two best formulations, k = 1..3 heads off per block
    assert len(data["curves"]) == 6 and all(len(c) == 3 for c in data["curves"].values())


def test_bad_override_is_one_line(tmp_path, capsys):
    assert rank_quality.main(["--out", str(tmp_path), "ranking.chain=sideways"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ranking.chain='sideways' is not allowed") and "\n" not in err
