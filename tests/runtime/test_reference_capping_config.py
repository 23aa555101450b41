"""Reference capping configs with malformed fields: each is an error that
names the field, at load time or when an experiment is chosen."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from axis_steer.runtime.formats import ReferenceCappingConfig, load_capping_config  # noqa: E402


def good():
    return {
        "vectors": {"v1": {"vector": torch.ones(4), "layer": 1}, "v2": {"vector": -torch.ones(4), "layer": 2}},
        "experiments": [
            {"id": "a", "interventions": [{"vector": "v1", "cap": -0.5}, {"vector": "v2", "cap": 0.25}]},
            {"id": "b", "interventions": [{"vector": "v2"}]},
        ],
    }


def write(tmp_path, obj):
    path = tmp_path / "capping_config.pt"
    torch.save(obj, path)
    return path


def test_a_well_formed_config_loads_and_experiments_are_chosen_by_id_or_index(tmp_path):
    cfg = load_capping_config(write(tmp_path, good()))
    a = cfg.experiment("a")
    assert [(e.layer, e.hi) for e in a.entries] == [(1, -0.5), (2, 0.25)]
    assert cfg.experiment(np.int64(0)).metadata["experiment"] == "a"  # a NumPy integer is an index
    assert cfg.experiment(np.int64(1)).metadata["skipped_without_cap"] == ["v2"]
    obj = good()
    obj["vectors"]["v1"]["layer"] = torch.tensor(1)  # an integer tensor is an integer
    assert load_capping_config(write(tmp_path, obj)).experiment("a").entries[0].layer == 1


def _set(path, value):
    def change(obj):
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return obj

    return change


@pytest.mark.parametrize(
    "change, words",
    [
        (_set(["vectors"], [{"vector": torch.ones(4), "layer": 1}]), "'vectors' is a list"),
        (_set(["experiments"], {"a": {"interventions": []}}), "'experiments' is a dict"),
        (_set(["experiments", 0, "interventions"], {"vector": "v1", "cap": 0.1}), r"experiments\[0\]\['interventions'\] is a dict"),
        (_set(["experiments", 0, "interventions"], "v1"), r"experiments\[0\]\['interventions'\] is a str"),
        (_set(["experiments", 0, "interventions", 0], "v1"), r"\['interventions'\]\[0\] is a str"),
        (_set(["vectors", "v1", "layer"], 1.5), r"vectors\['v1'\]\['layer'\] = 1.5: expected an integer"),
        (_set(["vectors", "v1", "layer"], "1"), r"vectors\['v1'\]\['layer'\] = '1': expected an integer"),
        (_set(["vectors", "v1", "layer"], True), r"'layer'\] = True: expected an integer"),
        (_set(["experiments", 0, "interventions", 0, "cap"], "abc"), r"\['cap'\] = 'abc': expected a number"),
        (_set(["experiments", 0, "interventions", 0, "cap"], float("nan")), r"\['cap'\] is NaN"),
        (_set(["experiments", 0, "interventions", 0, "vector"], "v9"), "unknown vector 'v9'"),
    ],
)
def test_a_malformed_field_is_named(tmp_path, change, words):
    with pytest.raises(ValueError, match=words):
        load_capping_config(write(tmp_path, change(good())))


def test_configs_built_in_python_are_checked_when_an_experiment_is_chosen():
    vectors = {"v1": (torch.ones(4), 1), "bad": (torch.ones(4), 1.5)}
    cfg = ReferenceCappingConfig(vectors, [{"id": "a", "interventions": [{"vector": "v1", "cap": "abc"}]},
                                           {"id": "b", "interventions": {"vector": "v1"}},
                                           {"id": "c", "interventions": [{"vector": "bad", "cap": 0.0}]}])
    with pytest.raises(ValueError, match=r"experiment 'a' intervention 0 \('cap'\) = 'abc'"):
        cfg.experiment("a")
    with pytest.raises(ValueError, match="'interventions' is a dict"):
        cfg.experiment("b")
    with pytest.raises(ValueError, match=r"vectors\['bad'\]\['layer'\] = 1.5"):
        cfg.experiment(2)
    with pytest.raises(ValueError, match="expected an id string or a list index"):
        cfg.experiment(1.0)
    with pytest.raises(ValueError, match="'experiments' is|experiments: a dict"):
        ReferenceCappingConfig(vectors, {"a": []}).experiment("a")
