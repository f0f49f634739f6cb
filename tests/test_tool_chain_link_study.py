"""tools/chain_link_study.py: one DarkSide chain link trained alone and measured in bins."""

import json

import numpy as np
import pytest

from conftest import ROOT
from model_families import script_module


def test_chain_link_study_trains_one_link_and_reports_its_bins(tmp_path):
    tool = script_module(ROOT / "tools" / "chain_link_study.py", "chain_link_study")
    out = tmp_path / "s2.json"
    assert tool.main(["--link", "S2", "--previous", "standardize", "--steps", "3",
                      "--batch-size", "64", "--n-train", "2000", "--n-eval", "5000",
                      "--output-dir", str(tmp_path / "run"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["link"], result["previous"], result["steps"]) == ("S2", "standardize", 3)
    assert set(result["worst"]) == {"mean:S2", "width:S2", "corr:S1-S2"}
    assert len(result["width_dev"]) == len(result["bins"]) == 46   # 23 bins x NR, ER
    assert all(np.isfinite(w["value"]) and w["value"] >= 0 for w in result["worst"].values())
    assert max(result["width_dev"]) == pytest.approx(result["worst"]["width:S2"]["value"])
    with pytest.raises(SystemExit):
        tool.main(["--link", "S2", "--steps", "0"])
