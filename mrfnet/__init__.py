"""MRFNet reproduction in Caffe: the stages below the user's top-level folders, and the `mrfnet` command (cli)."""
