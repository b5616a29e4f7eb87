"""A Python layer used by the tests: multiplies its input by a factor given as JSON in param_str."""

import json

import caffe


class ScaleLayer(caffe.Layer):
    def setup(self, bottom, top):
        self.factor = float(json.loads(self.param_str)["factor"])

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.factor * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.factor * top[0].diff
