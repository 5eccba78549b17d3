"""The typer command line and its rendering of engine events. No logic lives here.

* :mod:`.app` — creates the app and registers the commands; ``main()``;
* :mod:`.commands` — one module per command (``copy``, ``verify``, ``run``, ``demo``);
* :mod:`.options` — the option blocks the commands share, each option defined once;
* :mod:`.runtime` — exit codes, the one error style, logging, signal handling;
* :mod:`.render` — live progress, plain lines and JSON lines, and the summaries.

Imports go one way: ``app`` → ``commands`` → ``options`` / ``runtime`` / ``render``.
"""
