"""hvdtrain: Horovod ring-allreduce training recipes for TensorFlow/Keras."""

import os

# Keep TensorFlow's C++ start-up banner out of every rank's output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
