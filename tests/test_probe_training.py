"""tools/probe_training.py on real Caffe: it trains on the project's loop, writes its table and CSV, and changes
the nets it builds without touching netgen's module defaults."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys

from netgen import blocks, network

from conftest import REPO

TOOL = REPO / "tools" / "probe_training.py"
spec = importlib.util.spec_from_file_location("probe_training", TOOL)
probe = importlib.util.module_from_spec(spec)
sys.modules["probe_training"] = probe
spec.loader.exec_module(probe)

COLUMNS = ["iteration", "seconds", "lr", "train_mse", "identity_mse", "loss_ratio", "residual", "train_gain",
           "val_gain", "test_gain", "g_encoder", "g_out", "u_encoder", "u_out"]


def test_the_tiny_probe_prints_and_writes_a_row_per_evaluation_and_the_last(tmp_path):
    out = tmp_path / "probe.csv"
    result = subprocess.run([sys.executable, str(TOOL), "--variant", "tiny", "--iterations", "5", "--eval-every", "2",
                             "--crop-size", "32", "--eval-size", "32", "--eval-count", "4", "--halvings", "1",
                             "--schedule", "coarse-to-fine", "--out", str(out)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("iteration=")]
    assert [line.split()[0] for line in printed] == ["iteration=2", "iteration=4", "iteration=5"]
    with out.open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == COLUMNS
    assert [int(row["iteration"]) for row in rows] == [2, 4, 5]
    assert [float(row["lr"]) for row in rows] == [5e-4, 2.5e-4, 1.25e-4]  # halved every 5 // (1 + 1) iterations
    for row in rows:
        values = {key: float(value) for key, value in row.items()}
        assert all(math.isfinite(value) for value in values.values()), row
        assert math.isclose(values["loss_ratio"], values["train_mse"] / values["identity_mse"], rel_tol=1e-6)
        assert values["g_out"] > 0 and values["u_out"] > 0


def _convolutions(net) -> dict:
    return {layer.name: layer for layer in net.layer if layer.type == "Convolution"}


def test_the_probe_initialisation_edits_its_own_net_and_leaves_netgen_alone():
    defaults = (dict(network.OUTPUT_FILLER), network.OUTPUT_LR_MULT, dict(blocks.BRANCH_END_FILLER))
    built = probe.build_net("mrfnet", 2, 32, True)
    same = probe.initialise(probe.build_net("mrfnet", 2, 32, True), network.OUTPUT_FILLER, network.OUTPUT_LR_MULT,
                            None)
    assert same == built  # netgen's own values change nothing

    probed = _convolutions(probe.initialise(probe.build_net("mrfnet", 2, 32, True),
                                            dict(type="gaussian", std=1e-3), 1.0, blocks.WEIGHT_FILLER))
    outputs = [name for name in probed if probe.OUTPUT_CONV.fullmatch(name)]
    assert outputs == [f"conv_r{k}_out" for k in range(1, 5)]
    for name in outputs:
        assert probed[name].convolution_param.weight_filler.type == "gaussian"
        assert math.isclose(probed[name].convolution_param.weight_filler.std, 1e-3, rel_tol=1e-6)
        assert [param.lr_mult for param in probed[name].param] == [1.0, 1.0]
    originals = _convolutions(built)
    ends = [name for name, layer in originals.items()
            if layer.convolution_param.weight_filler.type == "constant" and name not in outputs]
    assert ends and all(probed[name].convolution_param.weight_filler.type == "msra" for name in ends)
    assert (dict(network.OUTPUT_FILLER), network.OUTPUT_LR_MULT, dict(blocks.BRANCH_END_FILLER)) == defaults
