"""finalcopy: move finished work to its final storage, verified, so nothing is lost."""

__version__ = "0.1.0"
