"""What this machine's CPU offers for int8 inference.

The features that decide how fast (and how exactly) int8 kernels run on x86:

- ``avx2``: the baseline for vectorized int8 (u8 x s8 via ``vpmaddubsw``, which saturates in
  16 bits; that saturation is why quantizers offer *reduce-range* on CPUs without VNNI);
- ``avx512f``: 512-bit registers;
- ``avx512_vnni`` / ``avx_vnni``: ``vpdpbusd``, a u8 x s8 dot product accumulated in 32 bits
  (no saturation, about 3x fewer instructions);
- ``amx``: Advanced Matrix Extensions tiles for int8 (the ``amx_int8`` flag).

Linux reports them in ``/proc/cpuinfo``; elsewhere they are unknown (``None``). Detection is a
pure read: :func:`parse_cpuinfo` takes the file's text so tests can feed a sample.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["CpuInfo", "INT8_FLAGS", "parse_cpuinfo", "detect_cpu"]

#: CpuInfo field -> (``/proc/cpuinfo`` flag, display name), in display order.
INT8_FLAGS: dict[str, tuple[str, str]] = {
    "avx2": ("avx2", "AVX2"),
    "avx512f": ("avx512f", "AVX-512F"),
    "avx512_vnni": ("avx512_vnni", "AVX512-VNNI"),
    "avx_vnni": ("avx_vnni", "AVX-VNNI"),
    "amx": ("amx_int8", "AMX"),
}


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, logical core count and int8-relevant features.

    Attributes:
        model_name: e.g. ``"Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"``; ``None`` if unknown.
        logical_cores: logical processors of the machine; ``None`` if unknown.
        avx2: AVX2 present (``None``: unknown, as for every flag below).
        avx512f: AVX-512 Foundation present.
        avx512_vnni: AVX-512 VNNI present.
        avx_vnni: the 256-bit AVX-VNNI present.
        amx: AMX with int8 tiles (``amx_int8``) present.
        source: where the facts came from (``"/proc/cpuinfo"`` or ``"platform"``).
    """

    model_name: str | None
    logical_cores: int | None
    avx2: bool | None = None
    avx512f: bool | None = None
    avx512_vnni: bool | None = None
    avx_vnni: bool | None = None
    amx: bool | None = None
    source: str = "platform"

    @property
    def has_vnni(self) -> bool | None:
        """True when either VNNI flavour is present; ``None`` when both are unknown."""
        if self.avx512_vnni or self.avx_vnni:
            return True
        if self.avx512_vnni is None and self.avx_vnni is None:
            return None
        return False

    def features_text(self) -> str:
        """``"AVX2 yes, AVX-512F no, …"``, with ``unknown`` for features that were not read."""
        words = {True: "yes", False: "no", None: "unknown"}
        return ", ".join(f"{label} {words[getattr(self, field)]}" for field, (_, label) in INT8_FLAGS.items())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields plus ``has_vnni``."""
        out = dataclasses.asdict(self)
        out["has_vnni"] = self.has_vnni
        return out


def parse_cpuinfo(text: str) -> CpuInfo:
    """Read a ``/proc/cpuinfo`` text.

    The first processor's ``model name`` (ARM: ``Hardware`` or ``Model``) and ``flags``
    (ARM: ``Features``) lines are used; logical cores are the ``processor`` entries. With no
    flags line the features are unknown (``None``); with one, a missing flag is ``False``.
    """
    fields: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor" and value.strip().isdigit():
            processors += 1
        fields.setdefault(key, value.strip())
    name = fields.get("model name") or fields.get("Hardware") or fields.get("Model") or None
    flags_text = fields.get("flags", fields.get("Features"))
    if flags_text is None:
        features: dict[str, bool | None] = {field: None for field in INT8_FLAGS}
    else:
        flags = set(flags_text.split())
        features = {field: flag in flags for field, (flag, _) in INT8_FLAGS.items()}
    return CpuInfo(name, processors or None, source="/proc/cpuinfo", **features)


def detect_cpu(path: str | os.PathLike[str] = "/proc/cpuinfo") -> CpuInfo:
    """This machine's :class:`CpuInfo`: from ``path`` when readable, else model and cores only.

    Never raises: what cannot be read is reported as unknown.
    """
    try:
        info = parse_cpuinfo(Path(path).read_text(errors="replace"))
    except OSError:
        return CpuInfo(platform.processor() or None, os.cpu_count())
    if info.model_name is None or info.logical_cores is None:
        info = dataclasses.replace(
            info,
            model_name=info.model_name or platform.processor() or None,
            logical_cores=info.logical_cores or os.cpu_count(),
        )
    return info
