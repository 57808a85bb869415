"""Distributed back ends. ``horovod_keras`` wraps Horovod's Keras integration (Keras 2 / TF 2.15).

Everything Horovod-specific (init, optimizer wrap, broadcast, metric averaging, collectives) lives in one back-end
module with the same functions, so a second implementation (e.g. Horovod core collectives for Keras 3) fits beside it.
"""
