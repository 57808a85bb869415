"""hvdtrain: Horovod ring-allreduce training recipes for TensorFlow/Keras."""

__version__ = "0.1.0"
