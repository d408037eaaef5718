"""``onnxslim simplify``: :class:`passes.simplify.SimplifyPass` through the one flow."""

from __future__ import annotations

import os

from onnxslim.flow import FlowOptions, PassReport, Plan, run_flow
from passes.simplify import SimplifyOptions, SimplifyPass

__all__ = ["simplify_file"]


def simplify_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    use_onnxsim: bool = True,
    options: FlowOptions = FlowOptions(),
) -> PassReport:
    """Simplify the model at ``input_path`` and write it to ``output_path``.

    A model with nothing to simplify is still written (a valid copy); the report says
    UNCHANGED.

    Raises:
        OnnxSlimError: as :func:`onnxslim.flow.run_flow`; nothing is written then.
    """
    step = SimplifyPass(options=SimplifyOptions(use_onnxsim=use_onnxsim))
    return run_flow(input_path, output_path, lambda model: Plan([step]), options).report
