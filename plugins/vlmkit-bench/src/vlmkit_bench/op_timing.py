"""Benchmark of :func:`vlmkit.ops.patch_info_mining` backends at Mini-Gemini's shapes.

Per view: 576 LR tokens × 1024 channels and an HR map of 2880 × 192 × 192 (M = 8); MGM-HD mines
5 views per image (the global view and 4 crops, each against a 192 × 192 map). For each backend it
reports the median wall time, the peak memory the call adds, the speed-up and memory ratio against
``"reference"``, the largest difference from the reference output and, on CUDA, the HR bytes read
per second against the device's peak bandwidth (the bound being one read of the HR map).

Peak memory is what the call allocates on top of what was live before it (inputs and weights):

- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the
  memory allocated before the call;
- CPU (Linux): the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``)
  minus its resident set before the call, with glibc told (``mallopt``) to serve every allocation
  of 64 KiB or more with its own mapping and return it on free (and to hand back the free heap
  memory it retained before the call), so the resident set follows the live tensors. Elsewhere
  CPU memory is not measured (reported as ``None``).

``vlmkit bench mining`` runs it from the command line (see :data:`mining_command`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import click
import torch
from torch import nn

from vlmkit.dtypes import DTYPES
from vlmkit.ops.patch_info import patch_info_mining

TOKENS, WINDOW, LR_DIM, HR_DIM = 576, 8, 1024, 2880
HD_VIEWS = 5


# --- memory -------------------------------------------------------------------------------------


def _proc_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f"{key} not in /proc/self/status")
    return int(match.group(1)) * 1024


def _cpu_memory_ready() -> bool:
    """Set glibc up so RSS follows large allocations; False where that cannot be measured."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        if not (libc.mallopt(m_mmap_threshold, 64 * 1024) and libc.mallopt(m_trim_threshold, 0)):
            return False
        libc.malloc_trim(0)  # hand back what the heap retained, so it is not freed mid-call
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_bytes("VmHWM")
        return True
    except (OSError, AttributeError):
        return False


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int | None, Any]:
    """``(bytes, result)``: what ``fn()`` adds at its peak on top of what was allocated before it
    (``None`` where it cannot be measured, see the module doc), and ``fn()``'s result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, result
    if not _cpu_memory_ready():
        return None, fn()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _proc_bytes("VmRSS")
    result = fn()
    return _proc_bytes("VmHWM") - before, result


# --- the measured call --------------------------------------------------------------------------


def _projection(in_dim: int, out_dim: int) -> nn.Sequential:
    proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))
    with torch.no_grad():
        proj[0].weight.uniform_(0.5, 1.5)
        proj[0].bias.normal_(0, 0.1)
    return proj


def _inputs(views: int, device: torch.device, dtype: torch.dtype, seed: int, grad: bool):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    projections = [
        _projection(LR_DIM, LR_DIM),
        _projection(HR_DIM, LR_DIM),
        _projection(HR_DIM, LR_DIM),
    ]
    projections = [p.to(device, dtype).requires_grad_(grad) for p in projections]
    side = int(TOKENS**0.5) * WINDOW
    lr = torch.randn(views, TOKENS, LR_DIM, generator=gen).to(device, dtype)
    hr = torch.empty(views, HR_DIM, side, side, dtype=dtype, device=device)
    for i in range(views):  # fill view by view to keep the float32 staging copy small
        hr[i] = torch.randn(HR_DIM, side, side, generator=gen).to(device, dtype)
    return lr, hr, projections


def _call(backend: str, lr, hr, projections, backward: bool) -> Callable[[], torch.Tensor]:
    def forward_only() -> torch.Tensor:
        with torch.no_grad():
            return patch_info_mining(lr, hr, *projections, backend=backend)

    def forward_backward() -> torch.Tensor:
        for p in projections:
            p.zero_grad(set_to_none=True)
        out = patch_info_mining(lr, hr, *projections, backend=backend)
        out.backward(torch.ones_like(out))
        return out.detach()

    return forward_backward if backward else forward_only


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        if match:
            name = match.group(1).strip()
    return f"{name}, {torch.get_num_threads()} threads"


def device_bandwidth(device: torch.device) -> float | None:
    """Peak memory bandwidth in bytes/s of a CUDA device (double data rate × bus width)."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8


def default_backends(device: torch.device) -> list[str]:
    """``reference`` and ``torch`` everywhere, plus ``triton`` on CUDA when it is importable."""
    names = ["reference", "torch"]
    if device.type == "cuda":
        with contextlib.suppress(ImportError):
            import triton  # noqa: F401

            names.append("triton")
    return names


def run(
    batch: int = 1,
    hd: bool = False,
    backends: list[str] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    repeats: int = 3,
    warmup: int = 1,
    backward: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Time and measure the memory of each backend at MGM's shapes.

    Args:
        batch: images; each is 1 view (5 with ``hd``) of lr (576, 1024) and hr (2880, 192, 192).
        hd: MGM-HD: 5 views per image.
        backends: names to run (default :func:`default_backends`); ``"reference"`` always runs
            first as the baseline when listed.
        device: ``"cpu"``, ``"cuda"``…; default CUDA when available.
        dtype: of the inputs and the projections.
        repeats, warmup: timed and untimed calls per backend (the median is reported).
        backward: time forward + backward (gradients of the projections, as in MGM's training
            with frozen towers) instead of the forward under ``torch.no_grad()``.
        seed: of the random inputs and weights.

    Returns:
        ``{"config": {...}, "results": {backend: {...}}}`` with, per backend, ``time_s`` (median),
        ``times_s``, ``peak_bytes``, ``speedup`` and ``memory_ratio`` against the reference,
        ``max_abs_diff`` from the reference output, and on CUDA ``hr_bytes_per_s`` and
        ``bandwidth_fraction`` (time to read the HR map once at peak bandwidth / time).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = list(backends or default_backends(device))
    if "reference" in names:
        names.remove("reference")
        names.insert(0, "reference")
    views = batch * (HD_VIEWS if hd else 1)
    lr, hr, projections = _inputs(views, device, dtype, seed, grad=backward)
    hr_bytes = hr.numel() * hr.element_size()
    bandwidth = device_bandwidth(device)
    config = {
        "batch": batch,
        "hd": hd,
        "views": views,
        "tokens": TOKENS,
        "window": WINDOW,
        "lr_dim": LR_DIM,
        "hr_dim": HR_DIM,
        "hr_side": hr.shape[-1],
        "hr_bytes": hr_bytes,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "device_name": _device_name(device),
        "device_bandwidth_bytes_per_s": bandwidth,
        "mode": "forward+backward" if backward else "forward",
        "repeats": repeats,
        "warmup": warmup,
        "torch": torch.__version__,
        "memory_method": (
            "cuda max_memory_allocated"
            if device.type == "cuda"
            else "VmHWM - VmRSS (allocations >= 64 KiB mmap'd)"
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    calls = {name: _call(name, lr, hr, projections, backward) for name in names}
    # All timings first: the CPU memory measurement changes how glibc allocates (see module doc).
    for name, fn in calls.items():
        times = _timed(fn, device, repeats, warmup)
        results[name] = {"time_s": statistics.median(times), "times_s": times}
    reference_out = None
    for name, fn in calls.items():
        entry = results[name]
        entry["peak_bytes"], out = peak_memory(fn, device)
        if name == "reference":
            reference_out = out.float()
        elif reference_out is not None:
            entry["max_abs_diff"] = (out.float() - reference_out).abs().max().item()
        if device.type == "cuda":
            entry["hr_bytes_per_s"] = hr_bytes / entry["time_s"]
            if bandwidth:
                entry["bandwidth_fraction"] = hr_bytes / bandwidth / entry["time_s"]
        del out
    base = results.get("reference")
    for entry in results.values():
        if base is not None:
            entry["speedup"] = base["time_s"] / entry["time_s"]
            if base["peak_bytes"] and entry["peak_bytes"] is not None:
                entry["memory_ratio"] = entry["peak_bytes"] / base["peak_bytes"]
    return {"config": config, "results": results}


# --- command line -------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    """The report as a side-by-side table, one row per backend."""
    cfg = report["config"]
    lines = [
        f"patch info mining ({cfg['mode']}): {cfg['views']} view(s) of {cfg['tokens']} LR tokens "
        f"x {cfg['lr_dim']}, HR {cfg['hr_dim']} x {cfg['hr_side']} x {cfg['hr_side']} "
        f"(M={cfg['window']}), {cfg['dtype']} on {cfg['device']} ({cfg['device_name']}), "
        f"median of {cfg['repeats']}",
    ]
    header = ["backend", "time ms", "speed-up", "peak MiB", "mem/ref", "max|diff|"]
    cuda = cfg["device"].startswith("cuda")
    if cuda:
        header += ["HR GB/s", "of peak BW"]
    rows = [header]
    for name, r in report["results"].items():
        peak = r["peak_bytes"]
        row = [
            name,
            f"{r['time_s'] * 1e3:.1f}",
            f"{r['speedup']:.1f}x" if "speedup" in r else "-",
            "n/a" if peak is None else f"{peak / 2**20:.0f}",
            f"{r['memory_ratio']:.3f}" if "memory_ratio" in r else "-",
            f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "-",
        ]
        if cuda:
            row.append(f"{r['hr_bytes_per_s'] / 1e9:.0f}")
            frac = r.get("bandwidth_fraction")
            row.append("-" if frac is None else f"{frac:.0%}")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))))  # fmt: skip
    return "\n".join(lines)


@click.command("mining")
@click.option("--hd/--no-hd", default=False, help="MGM-HD: 5 views per image.")
@click.option("--batch", default=1, show_default=True, help="Images.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1… (default: cuda if available).")
@click.option(
    "--dtype", type=click.Choice(sorted(DTYPES)), default="float32", show_default=True
)
@click.option(
    "--backends",
    default=None,
    help="Comma-separated backends (default: reference,torch and triton on CUDA).",
)
@click.option("--repeats", default=3, show_default=True, help="Timed calls per backend.")
@click.option("--warmup", default=1, show_default=True, help="Untimed calls per backend.")
@click.option("--backward", is_flag=True, help="Time forward + backward instead of forward.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the full report as JSON.")  # fmt: skip
def mining_command(
    hd: bool,
    batch: int,
    device: str | None,
    dtype: str,
    backends: str | None,
    repeats: int,
    warmup: int,
    backward: bool,
    json_path: str | None,
) -> None:
    """Time patch info mining backends at Mini-Gemini's shapes (use --repeats 1 on a CPU)."""
    names = [b.strip() for b in backends.split(",") if b.strip()] if backends else None
    report = run(
        batch=batch,
        hd=hd,
        backends=names,
        device=device,
        dtype=DTYPES[dtype],
        repeats=repeats,
        warmup=warmup,
        backward=backward,
    )
    click.echo(format_table(report))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
        click.echo(f"wrote {json_path}")
