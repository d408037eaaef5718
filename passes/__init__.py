"""Graph passes of onnxslim: each takes a model and returns a rewritten model plus what it did.

This package has no command-line code and prints nothing; it never imports ``onnxslim``.
"""

from passes._base import EXACT, Pass, PassResult, RunContext, Tolerance

__all__ = ["EXACT", "Pass", "PassResult", "RunContext", "Tolerance"]
