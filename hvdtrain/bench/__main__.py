"""``python -m hvdtrain.bench allreduce|scaling|overhead ...``: the ``hvdtrain bench`` commands on their own."""

from hvdtrain.bench.cli import main

main()
