"""Running a trained net: weights checks, model loading, tiling, the memory estimate, run folders, deblurring."""
