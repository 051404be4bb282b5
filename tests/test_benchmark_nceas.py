"""benchmarks/nceas.py (issue 17): baselines also get geosdm's target-group background; the JSON says how they
compare and that no input is an oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.benchmarks import load_benchmark

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def nceas_root(shared_data: Path) -> Path:
    root = shared_data / "nceas"
    if not (root / "NSW" / "train_po.parquet").is_file():
        pytest.skip(f"{root}/NSW is absent")
    return root


def test_target_group_background_is_the_sites_geosdm_softmaxes_over(nceas_root: Path) -> None:
    from geosdm.datasets import load_nceas
    from geosdm.models._prepare import prepare

    region = load_nceas(nceas_root, "NSW")
    table = load_benchmark("nceas").target_group_table(region)
    pres, bg = table[table["kind"] == "presence_only"], table[table["kind"] == "background"]
    assert len(pres) == len(region.presence) and bg["species"].isna().all()
    assert list(table.columns) == list(region.training_table().columns) and bg["group"].isna().all()
    # what MultiSpeciesSDM.fit trains on with background_weight=0 (random background dropped), for a subset of
    # species: the target group is every recorded site of the region, whichever species are modelled
    prep = prepare(region.training_table(), None, loss="deepmaxent", cube=None, covariates=list(region.covariates),
                   categorical=(), bias_covariates=(), series=None, species=region.species[:3], area=None,
                   patch_size=None, patches=None, work_dir=None, drop_background=True)
    sites = prep.sites.frame
    assert len(bg) == len(sites) == 2516 and (sites["family"] == "po").all()
    np.testing.assert_array_equal(bg[["x", "y"]].to_numpy(), sites[["x", "y"]].to_numpy())
    for c in region.covariates:
        np.testing.assert_array_equal(bg[c].astype(str).to_numpy(), sites[c].astype(str).to_numpy())


def test_small_run_reports_the_best_baseline_and_the_speedup(nceas_root: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    mod = load_benchmark("nceas")
    out = mod.main(["--data", str(nceas_root), "--regions", "NSW", "--species", "2", "--seeds", "1",
                    "--config", '{"epochs": 2, "n_members": 1}',
                    "--baselines", "maxent,logistic_quadratic,maxent_target_group,logistic_quadratic_target_group"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == json.loads(json.dumps(out))
    assert last["oracle_inputs"] is False and last["elapid_backend"] in ("glmnet", "liblinear")
    names = ["maxent", "logistic_quadratic", "maxent_target_group", "logistic_quadratic_target_group"]
    best = max(names, key=lambda b: last[f"auc_{b}_overall"])
    assert last["best_baseline_overall"] == best
    assert last["auc_best_baseline_overall"] == last[f"auc_{best}_overall"]
    margin = last["auc_geosdm_overall"] - last[f"auc_{best}_overall"]
    assert last["auc_margin_vs_best_baseline"] == pytest.approx(margin)
    assert last["auc_goal_met"] == (last["auc_margin_vs_best_baseline"] >= 0.01)
    speedup = last["fit_seconds_maxent_total"] / last["fit_seconds_geosdm_total"]
    assert last["fit_speedup_vs_maxent"] == pytest.approx(speedup)
    assert last["regions"]["NSW"]["n_background_target_group"] == 2516
    if last["elapid_backend"] == "glmnet":
        assert set(last["solvers_maxent"]) <= {"glmnet path, CV lambda", "glmnet path, last lambda"}
        assert sum(last["solvers_maxent_target_group"].values()) == 2
