"""Every number this project quotes from the paper, once, with the table or section it comes from."""

from __future__ import annotations

# The paper's own numbers (Tables IV and V, Sec. III.B), quoted beside ours.
PAPER_TABLE_V = {"refinenet": (28.73991, 0.854758), "lwrefinenet": (29.24461, 0.860164),
                 "rcrefinenet": (29.03971, 0.858601), "mrfnet": (29.40845, 0.862474)}  # VisDrone PSNR, SSIM


PAPER_PARAMS_CUT, PAPER_FLOPS_CUT = 0.50, 0.75


PAPER_LW_TIME_1280 = 0.494  # s per 1280x768 image, GTX 1650 (Table IV, LWRefineNet)


# Table III: MRFNet's memory per graphics card in MB, per-GPU batch -> MB: GOPRO at batch 8 and VisDrone at
# batch 16, each spread over the four GPUs of section 4.1 (docs/architecture.md, "Caffe's memory")
PAPER_TABLE_III = {2: 5452, 4: 5898}
