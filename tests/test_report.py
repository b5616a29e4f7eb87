"""The reproduction report: generated from a stored small run (tests/fixtures/report_small), and end to end."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from mrfnet import report

FIXTURE = Path(__file__).parent / "fixtures" / "report_small"
SECTIONS = ("## The paper's claims", "## Table I analogue", "## Table V analogue", "## Fig. 5 analogue",
            "## Table IV analogue", "## Table III analogue", "## Montages")


def _report_dir(tmp_path: Path) -> Path:
    target = tmp_path / "report"
    shutil.copytree(FIXTURE, target)
    return target


def test_the_report_has_every_section_with_numbers(tmp_path):
    folder = _report_dir(tmp_path)
    text = report.write_report(folder).read_text()
    for heading in SECTIONS:
        assert heading in text, heading
    assert "Small-budget CPU results" in text
    results = json.loads((folder / report.RESULTS).read_text())
    assert f"{results['scores']['mrfnet']['psnr']:.2f}" in text
    assert "12.72M" in text and "628.90G" in text, "Table I's parameter and multiply-add counts"
    for figure in ("loss_curves.png", "scale_vs_single.png"):
        assert (folder / figure).stat().st_size > 1000, figure


def test_every_claim_gets_a_verdict_and_a_number(tmp_path):
    folder = _report_dir(tmp_path)
    lines = report.summary_lines(folder)
    assert len(lines) == 9
    for line in lines:
        assert line.split(":")[0] in (report.CONFIRMED, report.NOT_CONFIRMED, report.NOT_MEASURABLE), line
        assert re.search(r"\d", line.split(":", 2)[2]), line
    assert any(line.startswith("confirmed: Lightweight process cuts parameters") for line in lines)
    assert any(line.startswith("not measurable here: 0.494 s") for line in lines)


def test_claims_follow_the_numbers(tmp_path):
    folder = _report_dir(tmp_path)
    results = json.loads((folder / report.RESULTS).read_text())
    results["scores"]["mrfnet"]["psnr"] = 99.0
    curves = {path.stem: report.read_curve(path) for path in (folder / report.CURVES).glob("*.csv")}
    verdicts = {claim.text: claim.verdict for claim in report.claims(results, curves)}
    assert verdicts["MRFNet gives the best PSNR of the four variants (Table V)"] == report.CONFIRMED


def test_a_folder_without_results_is_a_clear_error(tmp_path):
    from mrfnet.cli import main

    assert main(["report", str(tmp_path)]) == 1


def test_reproduce_quick_end_to_end(tmp_path):
    """The main job's few-minute version: every stage for real, then the report with numbers in each section."""
    from mrfnet.cli import main

    assert main(["reproduce", "--quick", "--work-dir", str(tmp_path / "work"), "--reports", str(tmp_path)]) == 0
    folder = tmp_path / "quick"
    text = (folder / report.REPORT).read_text()
    for heading in SECTIONS:
        assert heading in text, heading
    results = json.loads((folder / report.RESULTS).read_text())
    assert set(results["scores"]) == {"blurry", *report.VARIANT_ORDER, report.SINGLE_L2_RUN}
    assert all(0 < s["psnr"] < 100 and 0 < s["ssim"] <= 1 for s in results["scores"].values())
    assert all(len(curve) == results["settings"]["iterations"] + 1
               for curve in (path.read_text().splitlines() for path in (folder / report.CURVES).glob("*.csv")))
    for montage in results["montages"]:
        assert (folder / montage).is_file()
    # A second call reuses the data and the finished runs instead of training again.
    assert main(["reproduce", "--quick", "--work-dir", str(tmp_path / "work"), "--reports", str(tmp_path)]) == 0
    assert json.loads((folder / report.RESULTS).read_text())["seconds"]["train"] < results["seconds"]["train"]
