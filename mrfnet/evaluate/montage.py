"""Side-by-side montages (blur | output | sharp) with a zoomed crop and the PSNR drawn on, and contact sheets.

A montage is two rows of three panels, each panel the image's own size: the full images on top
(with the zoom box outlined), and below them the same crop of each, magnified ``ZOOM`` times with
nearest-neighbour so pixels stay visible. The crop is where the blurred and sharp images differ
most (a box filter of |sharp - blur|), which is where deblurring shows. Each panel carries a label
drawn with cv2.putText on a dark band: "blur 25.31 dB", "output 27.02 dB", "sharp".
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mrfnet.runtime.errors import InvalidValue

ZOOM = 4


GAP = 4  # pixels between panels


BACKGROUND = (255, 255, 255)


BOX_COLOUR = (0, 0, 255)  # BGR red


TEXT_COLOUR = (255, 255, 255)


BAND_COLOUR = (32, 32, 32)


FONT = cv2.FONT_HERSHEY_SIMPLEX


SHEET_COLUMNS = 2


SHEET_THUMB_WIDTH = 640


CAPTION_HEIGHT = 24  # the image's name, in a band above its thumbnail


def zoom_box(blur: np.ndarray, sharp: np.ndarray, zoom: int = ZOOM) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the crop, 1/zoom of the image per side, where blur and sharp differ most."""
    height, width = blur.shape[:2]
    box_w, box_h = max(1, width // zoom), max(1, height // zoom)
    difference = np.abs(sharp.astype(np.float32) - blur.astype(np.float32)).sum(axis=2)
    energy = cv2.boxFilter(difference, -1, (box_w, box_h), normalize=True, borderType=cv2.BORDER_CONSTANT)
    # box centres that keep the whole box inside the image
    y0, x0 = box_h // 2, box_w // 2
    valid = energy[y0:height - (box_h - box_h // 2) + 1, x0:width - (box_w - box_w // 2) + 1]
    cy, cx = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(cx), int(cy), box_w, box_h


def _label(panel: np.ndarray, text: str) -> None:
    """Draw ``text`` on a dark band at the top-left of ``panel`` (in place), scaled to the panel's width."""
    scale = max(0.3, min(1.5, panel.shape[1] / 640))
    thickness = max(1, round(scale * 2))
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    pad = max(2, round(4 * scale))
    cv2.rectangle(panel, (0, 0), (min(panel.shape[1] - 1, text_w + 2 * pad), text_h + baseline + 2 * pad),
                  BAND_COLOUR, thickness=-1)
    cv2.putText(panel, text, (pad, pad + text_h), FONT, scale, TEXT_COLOUR, thickness, cv2.LINE_AA)


def make_montage(blur: np.ndarray, output: np.ndarray, sharp: np.ndarray, *, psnr_blur: float, psnr_output: float,
                 zoom: int = ZOOM) -> np.ndarray:
    """The montage of one image (uint8 BGR, all three the same size): width 3 W + 2 GAP, height 2 H + GAP."""
    if not (blur.shape == output.shape == sharp.shape) or blur.ndim != 3 or blur.dtype != np.uint8:
        raise InvalidValue(f"montage needs three uint8 BGR images of one size, got {blur.shape}, {output.shape}, "
                         f"{sharp.shape}")
    height, width = blur.shape[:2]
    x, y, box_w, box_h = zoom_box(blur, sharp, zoom)
    canvas = np.full((2 * height + GAP, 3 * width + 2 * GAP, 3), BACKGROUND, dtype=np.uint8)
    labels = (f"blur {psnr_blur:.2f} dB", f"output {psnr_output:.2f} dB", "sharp")
    for column, (image, label) in enumerate(zip((blur, output, sharp), labels, strict=True)):
        left = column * (width + GAP)
        panel = image.copy()
        cv2.rectangle(panel, (x, y), (x + box_w - 1, y + box_h - 1), BOX_COLOUR, max(1, width // 320))
        _label(panel, label)
        canvas[:height, left:left + width] = panel
        crop = cv2.resize(image[y:y + box_h, x:x + box_w], (width, height), interpolation=cv2.INTER_NEAREST)
        _label(crop, f"x{zoom}")
        canvas[height + GAP:, left:left + width] = crop
    return canvas


def contact_sheet(montages: Sequence[tuple[str, np.ndarray]], *, columns: int = SHEET_COLUMNS,
                  thumb_width: int = SHEET_THUMB_WIDTH) -> np.ndarray:
    """Montages scaled to ``thumb_width`` and laid out ``columns`` to a row, each under a band with its name."""
    if not montages:
        raise InvalidValue("a contact sheet needs at least one montage")
    thumbs = []
    for name, image in montages:
        height = max(1, round(image.shape[0] * thumb_width / image.shape[1]))
        caption = np.full((CAPTION_HEIGHT, thumb_width, 3), BAND_COLOUR, dtype=np.uint8)
        cv2.putText(caption, name, (6, CAPTION_HEIGHT - 8), FONT, 0.55, TEXT_COLOUR, 1, cv2.LINE_AA)
        thumbs.append(np.vstack([caption, cv2.resize(image, (thumb_width, height), interpolation=cv2.INTER_AREA)]))
    cell_h = max(t.shape[0] for t in thumbs)
    columns = min(columns, len(thumbs))
    rows = -(-len(thumbs) // columns)
    sheet = np.full((rows * cell_h + (rows - 1) * GAP, columns * thumb_width + (columns - 1) * GAP, 3),
                    BACKGROUND, dtype=np.uint8)
    for index, thumb in enumerate(thumbs):
        top, left = (index // columns) * (cell_h + GAP), (index % columns) * (thumb_width + GAP)
        sheet[top:top + thumb.shape[0], left:left + thumb_width] = thumb
    return sheet
