"""``python -m fedge``: the same entry point as the ``fedge`` console script."""

from fedge._cli import main

main()
