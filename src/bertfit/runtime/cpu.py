"""What the CPU offers: the instruction sets that decide which backend and precision win.

int8 matmuls are fast with VNNI (AVX-512 VNNI, AVX-VNNI) or AMX on x86 and with the dot-product
extension on ARM; without them int8 gains much less over fp32. bf16 matmuls are native with AMX tiles
or AVX-512 BF16 dot products, emulated (slower than fp32) elsewhere. `cpu_features()` reads them from
/proc/cpuinfo (Linux); elsewhere it says only the architecture.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# Names as /proc/cpuinfo spells them -> the name we report.
X86_FLAGS = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
             "avx512_bf16": "avx512_bf16", "amx_tile": "amx", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16"}
ARM_FLAGS = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve", "bf16": "bf16"}


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """{"machine", "model", "cores", "flags": [...], "int8_dot_product": bool, "bf16_matmul": "amx" (tiles) |
    "avx512_bf16" (dot products) | "emulated"}: the flags that matter here."""
    text = _read(cpuinfo)
    model, present = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            present.update(value.split())
    names = {**X86_FLAGS, **ARM_FLAGS}
    flags = sorted({names[flag] for flag in present if flag in names})
    int8_dot = bool({"avx512_vnni", "avx_vnni", "amx_int8", "dotprod"} & set(flags))
    bf16 = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "emulated"
    return {"machine": platform.machine(), "model": model or platform.processor() or "unknown",
            "cores": os.cpu_count(), "flags": flags, "int8_dot_product": int8_dot, "bf16_matmul": bf16}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux, or no procfs: the architecture alone
        return ""
