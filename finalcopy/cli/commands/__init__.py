"""One module per command; :mod:`finalcopy.cli.app` registers them.

A command module imports only typer and the option blocks at import time. The
engine, the pipeline and the renderers are imported inside the command's body,
so ``finalcopy --help`` and each command load only what that command uses
(asyncssh, for one, only when a destination is remote).
"""
