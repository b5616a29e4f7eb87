"""The headline scored per blur length (issue 27): on the held-out photographs blurred at exactly 5, 10 or 15
pixels of motion, beside the least-squares linear filter fitted on training pairs of that same length, the
ceiling of what a learned sharpening without non-linearity reaches (mrfnet.evaluate.linear_filter)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from data_prep.records import iter_pairs
from mrfnet.evaluate.linear_filter import fit_filter, score_filter
from mrfnet.evaluate.scoring import ScoreOptions, score_model
from mrfnet.evaluate.testsets import open_test_set
from mrfnet.reproduce.claims import HEADLINE
from mrfnet.reproduce.datasets import length_dir
from mrfnet.runtime.run_files import DEPLOY

log = logging.getLogger(__name__)


def score_lengths(work_dir: Path, headline: Path, lengths: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """{"10": {"images", "blurry", "mrfnet", "linear"}, ...}: mean PSNR/SSIM of the blurry input, the headline
    (``headline``: its caffemodel, the deploy net beside its snapshots folder) and the linear filter, per length."""
    scores = {}
    for length in lengths:
        folder = length_dir(work_dir, length)
        test_lmdb = folder / "test_lmdb"
        model = score_model(headline.parents[1] / DEPLOY, headline, open_test_set(test_lmdb=test_lmdb),
                            out_dir=work_dir / "scores" / f"len{length}" / HEADLINE, options=ScoreOptions())
        linear = score_filter(fit_filter(iter_pairs(folder / "train_lmdb")), open_test_set(test_lmdb=test_lmdb))
        scores[str(length)] = {"images": linear["images"], "blurry": model.baseline, HEADLINE: model.mean,
                               "linear": {"psnr": linear["psnr"], "ssim": linear["ssim"]}}
        log.info("%d px motion: blurry %.2f dB, MRFNet %.2f, linear filter %.2f", length, model.baseline["psnr"],
                 model.mean["psnr"], linear["psnr"])
    return scores
