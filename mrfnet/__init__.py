"""MRFNet reproduction in Caffe: command line, Caffe environment, training and scoring."""
