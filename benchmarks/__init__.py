"""Reproducible throughput comparisons of finalcopy against other copy tools.

``python -m benchmarks.workloads`` builds the deterministic source trees and
``python -m benchmarks.run`` times every tool on them in the same run; see
``benchmarks/README.md``.
"""
