"""Development tooling: the local stack of real servers and the tiny IndexTTS2 builder.

Not part of the deployed processor; used by the demo, the tests and the benchmarks.
"""
