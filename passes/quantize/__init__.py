"""int8 quantization passes: static QDQ (this package) and dynamic (``_dynamic``).

Public surface: :class:`QuantizeStaticPass`, :class:`StaticQuantOptions`, :class:`PolicyOptions`,
:class:`PrepareForQuantizationPass` (and :func:`prepare_for_quantization`), the rules table :data:`RULES`; :class:`QuantizeDynamicPass` and
:class:`DynamicQuantOptions`.
"""

from passes.quantize._dynamic import DynamicQuantOptions, QuantizeDynamicPass
from passes.quantize._policy import PolicyOptions
from passes.quantize._prepare import PrepareForQuantizationPass, PrepareOptions, prepare_for_quantization
from passes.quantize._rules import RULES, OpRule
from passes.quantize._static import QuantizeStaticPass, StaticQuantOptions, quantize_static

__all__ = [
    "DynamicQuantOptions",
    "QuantizeDynamicPass",
    "OpRule",
    "PolicyOptions",
    "PrepareForQuantizationPass",
    "PrepareOptions",
    "QuantizeStaticPass",
    "RULES",
    "StaticQuantOptions",
    "prepare_for_quantization",
    "quantize_static",
]
