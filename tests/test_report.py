"""The reproduction report: generated from a stored small run (tests/fixtures/report_small), and end to end."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from mrfnet.reproduce.claims import (
    CONFIRMED,
    CONTRADICTED,
    HEADLINE,
    NOT_CONFIRMED,
    NOT_MEASURABLE,
    UNDECIDED,
    WITHIN_NOISE,
    SeedStats,
    ablation_run,
    claims,
    compare,
    read_curve,
    val_points,
)
from mrfnet.reproduce.report import CURVES, REPORT, RESULTS, summary_lines, write_report

FIXTURE = Path(__file__).parent / "fixtures" / "report_small"
SECTIONS = ("## The paper's claims", "## Table I analogue", "## Headline: MRFNet", "## Table V analogue",
            "## Validation while training", "## Fig. 5 analogue", "## Table IV analogue", "## Table III analogue")
VERDICTS = (CONFIRMED, NOT_CONFIRMED, NOT_MEASURABLE, CONTRADICTED, WITHIN_NOISE, UNDECIDED)


def _report_dir(tmp_path: Path) -> Path:
    target = tmp_path / "report"
    shutil.copytree(FIXTURE, target)
    return target


def _load(folder: Path):
    results = json.loads((folder / RESULTS).read_text())
    curves = {path.stem: read_curve(path) for path in (folder / CURVES).glob("*.csv")}
    return results, curves


def test_the_report_has_every_section_with_numbers(tmp_path):
    folder = _report_dir(tmp_path)
    text = write_report(folder).read_text()
    for heading in SECTIONS:
        assert heading in text, heading
    assert "Small-budget CPU results" in text
    results = json.loads((folder / RESULTS).read_text())
    assert f"{results['runs']['mrfnet']['val']['psnr']:.2f}" in text
    assert "12.72M" in text and "628.90G" in text, "Table I's parameter and multiply-add counts"
    assert "grace_hopper.jpg (matplotlib)" in text, "the photographs of each split are named"
    for figure in ("loss_curves.png", "scale_vs_single.png", "val_curves.png"):
        assert (folder / figure).stat().st_size > 1000, figure


def test_every_claim_gets_a_verdict_and_a_number(tmp_path):
    folder = _report_dir(tmp_path)
    lines = summary_lines(folder)
    assert len(lines) == 9
    for line in lines:
        assert line.split(":")[0] in VERDICTS, line
        assert re.search(r"\d", line.split(":", 2)[2]), line
    assert any(line.startswith("confirmed: Lightweight process cuts parameters") for line in lines)
    assert any(line.startswith("not measurable here: 0.494 s") for line in lines)


def test_ablation_verdicts_are_judged_against_the_seed_spread(tmp_path):
    results, curves = _load(_report_dir(tmp_path))
    results["settings"]["flat_db"] = 10.0  # every curve counts as flat here: the next test is about curves
    runs = results["runs"]
    claim = "MRFNet gives the best PSNR of the four variants (Table V)"

    def set_psnr(variant: str, values: tuple[float, float]) -> str:
        for seed, value in zip(results["settings"]["seeds"], values, strict=True):
            runs[ablation_run(variant, "l2", seed)]["val"]["psnr"] = value
        return {c.text: c.verdict for c in claims(results, curves)}[claim]

    for variant in ("refinenet", "lwrefinenet", "rcrefinenet"):
        set_psnr(variant, (30.0, 30.2))
    assert set_psnr("mrfnet", (30.5, 30.6)) == CONFIRMED  # +0.45 dB against a 0.2 dB spread
    assert set_psnr("mrfnet", (30.1, 30.3)) == WITHIN_NOISE
    assert set_psnr("mrfnet", (29.5, 29.6)) == CONTRADICTED


def test_claims_on_curves_still_rising_are_undecided_with_the_budget_they_would_need(tmp_path):
    results, curves = _load(_report_dir(tmp_path))
    results["settings"]["flat_db"] = 10.0
    flat = {c.text: c for c in claims(results, curves)}
    results["settings"]["flat_db"] = 0.001  # the fixture's curves still rise more than this
    rising = {c.text: c for c in claims(results, curves)}
    claim = "MRFNet gives the best PSNR of the four variants (Table V)"
    assert flat[claim].verdict != UNDECIDED and flat[claim].measured.endswith("curves flat")
    assert rising[claim].verdict == UNDECIDED
    assert re.search(r"\d+ of 8 curves still rising.* by about [\d,]+ iterations per run \(extrapolated\); "
                     f"verdict at this budget: {flat[claim].verdict}$", rising[claim].measured)
    fig5 = "The scale refinement loss converges faster than a single full-resolution L2 (Fig. 5)"
    assert re.search(r"final val gain [+-]\d\.\d\d vs [+-]\d\.\d\d dB", flat[fig5].measured)


def test_convergence_measures_on_a_known_curve():
    from mrfnet.reproduce.convergence import (
        is_flat,
        iterations_to_flat,
        iterations_to_reach,
        last_quarter_rise,
        training_seconds,
    )

    iterations = [100.0 * k for k in range(1, 9)]
    gains = [1.0 - 40.0 / t for t in iterations]  # gain = a - b / t with b = 40
    curve = {"iteration": iterations, "val_gain_db": gains, "wall_time": [10.0 * k for k in range(8)]}
    assert last_quarter_rise(curve) == pytest.approx(gains[-1] - gains[5])  # from iteration 600 to 800
    assert is_flat(curve, 0.05) and not is_flat(curve, 0.001)
    assert iterations_to_flat(curve, 0.01) == pytest.approx(40 / 0.03, abs=1)  # b / (3 flat_db)
    assert iterations_to_flat(curve, 0.05) is None  # flat already: nothing to extrapolate
    assert iterations_to_reach(curve, 0.5) == pytest.approx(100 * 0.5 / 0.6)  # from gain 0 at iteration 0
    assert iterations_to_reach(curve, 0.75) == pytest.approx(100 + 100 * (0.75 - 0.6) / (0.8 - 0.6))
    assert iterations_to_reach(curve, 2.0) is None
    curve["wall_time"][5:] = [t + 3600 for t in curve["wall_time"][5:]]  # a stop of an hour, then a resume
    assert training_seconds(curve) == pytest.approx(80.0)


def test_compare_has_a_floor():
    same = SeedStats((30.0, 30.0))
    assert compare(SeedStats((30.004, 30.004)), same, floor=0.01)[2] == WITHIN_NOISE
    difference, noise, verdict = compare(SeedStats((1.0, 1.2)), SeedStats((2.0, 2.1)),
                                                floor=0.0, lower_is_better=True)
    assert (difference, noise, verdict) == (pytest.approx(0.95), pytest.approx(0.2), CONFIRMED)


def test_a_headline_with_its_own_data_needs_its_own_blur():
    """Its data folder is named by its blur, so own copies or augmentation on the ablation's blur would clash."""
    from dataclasses import replace

    from mrfnet.reproduce.budgets import QUICK

    with pytest.raises(ValueError, match="headline_max_motion"):
        replace(QUICK, headline_max_motion=None)
    assert replace(QUICK, headline_copies=None, headline_augment=False, headline_max_motion=None)


def test_work_seconds_count_runs_trained_by_an_earlier_call_from_their_curves():
    from mrfnet.reproduce.job import work_seconds

    seconds = {"total": 400.0, "train": 100.0}
    runs = {"a": {"trained_seconds": 900.0, "seconds": 0.1}, "b": {"trained_seconds": 95.0, "seconds": 99.0},
            "c": {"trained_seconds": None, "seconds": 3.0}}
    assert work_seconds(seconds, runs) == 400.0 - 100.0 + 998.0
    assert work_seconds({"total": 400.0, "train": 100.0}, {"b": runs["b"]}) == 400.0  # nothing reused


def test_a_folder_without_results_is_a_clear_error(tmp_path, caplog, capsys):
    from mrfnet.cli import main

    assert main(["report", str(tmp_path)]) == 1
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [f"{tmp_path} holds no {RESULTS}: run `mrfnet reproduce` first"], errors
    assert "Traceback" not in caplog.text and capsys.readouterr().out == ""  # one line, no summary printed
    assert list(tmp_path.iterdir()) == []  # no report or figures drawn


@dataclass(frozen=True)
class QuickJob:
    """One run of `mrfnet reproduce --quick`, as it left its report folder."""

    argv: list[str]
    folder: Path
    text: str  # report.md
    results: dict
    timed: object  # what its timing stage returned


@pytest.fixture(scope="module")
def quick_job(tmp_path_factory) -> QuickJob:
    """The main job's few-minute version, run once for the tests below: every stage for real."""
    from mrfnet.cli import main
    from mrfnet.reproduce import job

    root = tmp_path_factory.mktemp("reproduce")
    argv = ["reproduce", "--quick", "--work-dir", str(root / "work"), "--reports", str(root)]
    timed = []
    time_variants = job.time_variants

    def recording(*args, **kwargs):  # the real timing stage; only what it returns is kept
        timed.append(time_variants(*args, **kwargs))
        return timed[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job, "time_variants", recording)
        assert main(argv) == 0
    folder = root / "quick"
    return QuickJob(argv, folder, (folder / REPORT).read_text(), json.loads((folder / RESULTS).read_text()),
                    timed[-1])


@pytest.mark.slow
def test_reproduce_quick_writes_the_report_with_every_section(quick_job):
    for heading in SECTIONS:
        assert heading in quick_job.text, heading


@pytest.mark.slow
def test_reproduce_quick_scores_every_planned_run_and_the_test_set(quick_job):
    from mrfnet.reproduce.budgets import QUICK, run_plan

    results = quick_job.results
    assert set(results["runs"]) == set(run_plan(QUICK))
    assert set(results["test"]) == {"blurry", HEADLINE}
    scores = [run["val"] for run in results["runs"].values()] + list(results["test"].values())
    assert all(0 < s["psnr"] < 100 and 0 < s["ssim"] <= 1 for s in scores)


@pytest.mark.slow
def test_reproduce_quick_keeps_each_runs_curve_validated_at_the_end_and_the_montages(quick_job):
    for name, run in quick_job.results["runs"].items():
        curve = read_curve(quick_job.folder / CURVES / f"{name}.csv")
        assert len(curve["iteration"]) == run["iterations"]
        assert val_points(curve)[0][-1] == run["iterations"]  # validated at the end
    for montage in quick_job.results["montages"]:
        assert (quick_job.folder / montage).is_file()


@pytest.mark.slow
def test_reproduce_quick_again_reuses_the_data_and_the_finished_runs(quick_job, monkeypatch):
    """A second call reuses the data and the finished runs instead of training again (it rewrites results.json:
    the tests above read the first call's copy, kept in the fixture). Its timing stage, which reuses nothing and
    is not what this test is about, hands back the first call's timings instead of timing the variants again."""
    from mrfnet.cli import main
    from mrfnet.reproduce import job

    monkeypatch.setattr(job, "time_variants", lambda *args, **kwargs: quick_job.timed)
    assert main(quick_job.argv) == 0
    again = json.loads((quick_job.folder / RESULTS).read_text())
    assert again["seconds"]["train"] < quick_job.results["seconds"]["train"]
    assert {name: run["val"] for name, run in again["runs"].items()} == \
        {name: run["val"] for name, run in quick_job.results["runs"].items()}  # the same finished runs


def test_real_blur_gains_are_grouped_by_measured_blur_length(tmp_path):
    from mrfnet.reproduce.real_blur import gains_by_blur

    lmdb = tmp_path / "test_lmdb"
    lmdb.mkdir()
    lengths = {"a": 1.0, "b": 4.0, "c": 7.5, "d": 30.0, "e": None}
    (lmdb / "meta_info.jsonl").write_text("".join(
        json.dumps({"key": key, "frames": {"blur_px": blur}}) + "\n" for key, blur in lengths.items()))
    rows = {"a": (30.0, 32.0), "b": (31.0, 32.0), "c": (29.0, 28.0), "d": (25.0, 25.5), "e": (1.0, 2.0)}
    (tmp_path / "images.csv").write_text("name,psnr,blur_psnr\n" + "".join(
        f"{key},{psnr},{blur}\n" for key, (psnr, blur) in rows.items()))
    assert gains_by_blur(tmp_path / "images.csv", lmdb) == [
        {"from_px": 0.0, "to_px": 5.0, "pairs": 2, "gain_db": -1.5},
        {"from_px": 5.0, "to_px": 10.0, "pairs": 1, "gain_db": 1.0},
        {"from_px": 10.0, "to_px": None, "pairs": 1, "gain_db": -0.5}]
