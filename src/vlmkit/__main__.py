"""``python -m vlmkit``: the same as the ``vlmkit`` command (usable under ``torchrun -m``)."""

from vlmkit.cli import main

main()
