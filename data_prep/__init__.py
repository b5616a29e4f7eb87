"""LMDB datasets of blurred/sharp pairs for Caffe's Data layer (``mrfnet data-prep``).

Sources (GOPRO, a folder of sharp images such as VisDrone, a blur/sharp folder pair, or the
photographs bundled with scikit-image) give pairs, real or synthetically blurred (``blur``);
``build`` crops them into patches, shuffles them by a seed and writes train/val/test LMDBs whose
records (``records``) are raw 6-channel Datums: blurred B,G,R then sharp B,G,R.
"""

from data_prep.blur import apply_blur, augment, gaussian_kernel, motion_kernel, synthesize_blur
from data_prep.build import build_dataset
from data_prep.images import ImageError, read_image
from data_prep.lmdb_writer import LmdbWriter
from data_prep.options import BuildOptions
from data_prep.patches import patch_origins
from data_prep.records import count_records, decode_pair, encode_pair, iter_pairs
from data_prep.sources import SOURCES, Item, load_items

__all__ = ["SOURCES", "BuildOptions", "ImageError", "Item", "LmdbWriter", "apply_blur", "augment", "build_dataset",
           "count_records", "decode_pair", "encode_pair", "gaussian_kernel", "iter_pairs", "load_items",
           "motion_kernel", "patch_origins", "read_image", "synthesize_blur"]
