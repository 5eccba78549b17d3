"""Throughput benchmarking: ``finalcopy bench DEST``, and the pieces ``benchmarks/`` shares.

A user's question is "how fast will finalcopy copy my work to this storage,
with which settings, and what limits it?" The answer is measured, not
guessed: a workload shaped like the real work, copied by the engine in this
process under a small matrix of settings, on the user's own destination,
which is left exactly as it was found.

* :mod:`.workload` — the deterministic source trees, and where to generate them;
* :mod:`.tools` — the other copy tools' command lines (``--compare``, ``benchmarks/``);
* :mod:`.measure` — timing a run: wall and CPU time, peak memory; timing a command;
* :mod:`.machine` — the machine facts every report carries;
* :mod:`.matrix` — the settings product, the rotated rounds, the runs' figures;
* :mod:`.folder` — ``DEST/finalcopy-bench-<random>/``: room check, removal;
* :mod:`.runs` — one timed run of the engine or of another tool;
* :mod:`.runner` — a whole benchmark, start to end;
* :mod:`.report` — the rich table with bars, the verdict, the SVG, the JSON.

Nothing is imported here: ``benchmarks/`` takes only what it needs, and the
command line imports the runner only when ``bench`` runs.
"""
