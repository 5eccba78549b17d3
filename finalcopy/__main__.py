"""``python -m finalcopy``: the same as the ``finalcopy`` command."""

from finalcopy.cli.app import main

main()
