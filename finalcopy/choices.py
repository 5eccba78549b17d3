"""The closed choices an operator names on the command line, defined once.

A leaf module: the engine, the backends, the pipeline step and the CLI all
take their vocabulary from here, and the CLI can import it at start-up
without loading any of them (typer lists a ``Literal``'s values in
``--help`` and checks them).
"""

from __future__ import annotations

from typing import Literal

#: The hash taken while streaming and written to the manifest.
AlgorithmName = Literal["blake3", "sha256", "xxh128"]

#: The hash used when none is named; here, not in :mod:`finalcopy.hashing`, so the
#: CLI can show it in ``--help`` without loading blake3 and xxhash.
DEFAULT_ALGORITHM: AlgorithmName = "blake3"

#: How each committed file is proven: read back and hashed, size only, or not at all.
VerifyMode = Literal["readback", "size", "none"]

#: Whether mode and mtime are kept: detect, always, never.
MetadataMode = Literal["auto", "posix", "none"]

#: What to do with names NTFS cannot hold: refuse them, or map them reversibly.
NameMode = Literal["reject", "map"]

#: Which projects of the work directory are ready.
Mode = Literal["strict", "lenient", "videos"]

#: What to do when ``OUTPUT/<project>`` already exists.
OnExisting = Literal["merge", "replace", "rename"]
