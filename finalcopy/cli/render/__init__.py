"""How the commands show their work: a live rich display, plain lines, or JSON lines.

* :mod:`.base` — the :class:`~.base.Renderer` interface and what every renderer shares;
* :mod:`.progress` — the one progress layout (columns) of the live display;
* :mod:`.engine` — renderers of engine events (``copy``, ``verify``);
* :mod:`.finalize` — renderers of a finalization (``run``), built on the engine's;
* :mod:`.summary` — the closing lines people read.

Renderers are event sinks; they hold no logic beyond presentation.
"""
