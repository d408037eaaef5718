"""int8 quantization passes: static QDQ (this package) and dynamic (``_dynamic``).

Public surface: :class:`QuantizeStaticPass`, :class:`StaticQuantOptions`, :class:`PolicyOptions`,
:class:`PrepareForQuantizationPass` and :class:`PrepareOptions` (run it before calibrating),
:class:`EqualizePass` (cross-layer equalization, before calibrating), the
rules table :data:`RULES`; :class:`QuantizeDynamicPass` and :class:`DynamicQuantOptions`.
"""

from passes.quantize._dynamic import DynamicQuantOptions, QuantizeDynamicPass
from passes.quantize._equalize import EqualizePass
from passes.quantize._policy import PolicyOptions
from passes.quantize._prepare import PrepareForQuantizationPass, PrepareOptions
from passes.quantize._rules import RULES, OpRule
from passes.quantize._static import TARGET_SQNR_DB, QuantizeStaticPass, StaticQuantOptions, quantize_static

__all__ = [
    "TARGET_SQNR_DB",
    "DynamicQuantOptions",
    "EqualizePass",
    "QuantizeDynamicPass",
    "OpRule",
    "PolicyOptions",
    "PrepareForQuantizationPass",
    "PrepareOptions",
    "QuantizeStaticPass",
    "RULES",
    "StaticQuantOptions",
    "quantize_static",
]
