"""Deployment: Caffe nets exported to ONNX, run by ONNX Runtime, quantised to INT8."""
