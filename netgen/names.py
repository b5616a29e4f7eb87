"""The names the nets share with the code that runs them: blobs, loss tops, the Python layers' modules.

Training, scoring and the Python layers find a net's parts by these names, so they live here once.
Scale lists run coarsest (1/8) first, full resolution last; STRIDE (in netgen.variants) is the
factor an input's sides must be a multiple of.
"""

from __future__ import annotations

from netgen.variants import SCALES

INPUT = "blur"
OUTPUTS = tuple(f"out_r{k}" for k in range(1, SCALES + 1))  # the last is the prediction
PREDICTION = OUTPUTS[-1]
TARGETS = tuple(f"sharp_r{k}" for k in range(1, SCALES)) + ("sharp",)  # train_val's S_k
SCALE_LOSS_TOPS = tuple(f"loss_r{k}" for k in range(1, SCALES + 1))  # zipped with OUTPUTS (strict)
EDGE_LOSS_TOPS = ("loss_edge", "loss_edge_adv")

# Caffe loads Python layers by module path; prototxt written before these moved name the old paths
# (mrfnet.layers.*), which re-export the same classes.
SCALE_LOSS_MODULE, SCALE_LOSS_LAYER = "netgen.layers.scale_loss", "ScaleRefinementLoss"
EDGE_MODULE = "netgen.layers.edge"
