"""``python -m finalcopy``: the same as the ``finalcopy`` command."""

from finalcopy.cli.app import main

if __name__ == "__main__":  # not when a tool loads this module under another name
    main()
