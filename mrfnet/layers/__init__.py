"""The old home of the Python layers, kept so that prototxt written before the move still load.

Run folders and prototxt generated before netgen.layers name ``mrfnet.layers.scale_loss`` and
``mrfnet.layers.edge`` as their Python layers' modules; these modules re-export the classes.
"""
