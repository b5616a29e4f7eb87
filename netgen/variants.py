"""The variants netgen builds (the registry), and the Table I numbers the builder uses.

:data:`VARIANTS` is the one list of variants: ``mrfnet netgen``, the commands' ``--variant(s)``
choices, ``mrfnet time`` and the tests parametrised over variants all read it, so a new variant is
one :func:`register_variant` entry below plus its test (docs/architecture.md, "Adding a variant /
source / loss / converter"). The main job's ablation does not read it: it lists the paper's four itself.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from netgen.errors import NetgenError


@dataclass(frozen=True)
class Variant:
    """What one variant switches on: the switches netgen/network.py's builder reads (a variant that needs
    another switch adds it here and the code it switches there).

    ``lightweight``: the lightweight process of Sec. III.B (LW-RCU bottleneck, 1x1 CRP and fusion
    convolutions, Table I's mixed 1x1/3x3 MRF kernels). ``residual``: the MRF unit of Eq. 3 after each
    fusion ("residual connection to fusion unit") and the remote residual connections between paths.
    """

    name: str
    lightweight: bool
    residual: bool


VARIANTS: dict[str, Variant] = {}  # name -> variant, in registration order
# A name is a folder (prototxt/<name>/), a file prefix (<name>_iter_N.caffemodel) and the first part of the
# main job's run names (<name>-l2-s0), which are split at the first "-": lower case, digits, underscores.
VARIANT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def register_variant(variant: Variant) -> Variant:
    """Add ``variant`` to :data:`VARIANTS`; a name used twice or one that would not survive as a folder
    and run-name prefix is refused here, at import, rather than as a wrong file later."""
    if not VARIANT_NAME.fullmatch(variant.name):
        raise ValueError(f"variant name {variant.name!r} must be lower case letters, digits and underscores")
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name!r} is registered twice")
    VARIANTS[variant.name] = variant
    return variant


# The paper's Table V ablation, in its order.
register_variant(Variant("refinenet", lightweight=False, residual=False))
register_variant(Variant("lwrefinenet", lightweight=True, residual=False))
register_variant(Variant("rcrefinenet", lightweight=False, residual=True))
register_variant(Variant("mrfnet", lightweight=True, residual=True))

# Table I's encoder (name, kernel, output channels, stride, pad), with the strides and paddings that
# make it work: 1x1 convolutions take pad 0, and Conv3, Conv5 and Conv7 halve the size (stride 2).
ENCODER = (
    ("Conv1", 5, 32, 1, 2),
    ("Conv2", 1, 64, 1, 0),
    ("Conv3", 5, 128, 2, 2),
    ("Conv4", 1, 128, 1, 0),
    ("Conv5", 3, 256, 2, 1),
    ("Conv6", 1, 256, 1, 0),
    ("Conv7", 3, 256, 2, 1),
    ("Conv8", 1, 256, 1, 0),
)
# Refinement paths r1 (coarsest, 1/8 of the input) to r4 (full resolution): the encoder layer each
# one starts from, and its width (Table I's conv_r{k}_1 widths).
PATH_INPUTS = ("Conv8", "Conv6", "Conv4", "Conv2")
PATH_WIDTHS = (256, 128, 64, 32)
SCALES = len(PATH_WIDTHS)
STRIDE = 2 ** (SCALES - 1)  # the coarsest path's downsampling factor
# Kernels of conv_r{k}_m1..m4 in MRFNet: Table I, with "3x1" read as 1x1 (r1) and the missing
# conv_r2_m1 taken as 3x3 like every other m1. RCRefineNet (not lightweight) uses 3x3 throughout.
MRF_KERNELS = ((3, 1, 3, 1), (3, 1, 3, 1), (3, 1, 3, 1), (3, 3, 1, 3))
BOTTLENECK_RATIO = 2  # LW-RCU middle width = path width / 2 (the paper gives none)
RCUS_BEFORE_FUSION = 2
RCUS_AFTER_CRP = 3
CRP_STAGES = 2


def get_variant(name: str) -> Variant:
    """The variant called ``name``; ValueError naming the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise NetgenError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


def scale_sides(height: int, width: int) -> list[tuple[int, int]]:
    """(height, width) of each path's output, coarsest first: every halving rounds up."""
    sides = [(height, width)]
    for _ in range(SCALES - 1):
        h, w = sides[0]
        sides.insert(0, (math.ceil(h / 2), math.ceil(w / 2)))
    return sides
