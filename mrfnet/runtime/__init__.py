"""Caffe in this process and in children, devices, machine facts, doctor: what every stage stands on."""
