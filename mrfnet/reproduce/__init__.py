"""The main job and its report: every stage run on the embedded data, each claim of the paper checked."""
