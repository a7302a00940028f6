"""Datasheet peak rates per GPU, for the "% of peak" column and the roofline chart.

These are the vendor's dense (no sparsity) datasheet figures at boost clock: leads,
not measurements. Sustained clocks under load, power capping and the SKU (SXM vs
PCIe/NVL) move the reachable rate, so a kernel at 70-80 % of these numbers is
already near what the hardware delivers. NVIDIA's datasheets print tensor-core rates
"with sparsity"; the dense rate is half of that."""
import re


def _rates(bf16, tf32, fp32, dram_tbs):
    return {"bf16": bf16, "fp16": bf16, "tf32": tf32, "fp32": fp32, "dram_tbs": dram_tbs}


_HOPPER_SXM = dict(bf16=989.0, tf32=494.0, fp32=67.0)   # H100/H200/H800 SXM5 datasheets
_HOPPER_PCIE = dict(bf16=756.0, tf32=378.0, fp32=51.0)  # H100/H800 PCIe datasheets (350 W)
_HOPPER_NVL = dict(bf16=835.0, tf32=418.0, fp32=60.0)   # H100 NVL / H200 NVL datasheets (400/600 W)
_AMPERE = dict(bf16=312.0, tf32=156.0, fp32=19.5)       # A100 datasheet, every SKU

# (words of torch.cuda.get_device_name(), rates): a row matches when each of its words
# is a whole word of the name (case-insensitive; words split at spaces and hyphens), and
# the row with the most words wins, so the order of the rows does not matter and
# "GH200" never matches "H200". TFLOP/s per compute dtype, DRAM TB/s.
PEAKS = [
    (("H100",), _rates(**_HOPPER_SXM, dram_tbs=3.35)),      # H100 SXM5 80GB HBM3
    (("H100", "PCIe"), _rates(**_HOPPER_PCIE, dram_tbs=2.0)),
    (("H100", "NVL"), _rates(**_HOPPER_NVL, dram_tbs=3.9)),  # 94GB HBM3
    (("H200",), _rates(**_HOPPER_SXM, dram_tbs=4.8)),       # H200 SXM5 141GB HBM3e
    (("H200", "NVL"), _rates(**_HOPPER_NVL, dram_tbs=4.8)),  # H200 datasheet, NVL column: 600 W, lower clocks
    # GH200 Grace Hopper datasheet: the H100 SXM's tensor rates; 96GB HBM3 at 4 TB/s
    # (reported as "GH200 480GB", the Grace LPDDR5X size), 144GB HBM3e at 4.9 TB/s.
    (("GH200",), _rates(**_HOPPER_SXM, dram_tbs=4.0)),
    (("GH200", "HBM3e"), _rates(**_HOPPER_SXM, dram_tbs=4.9)),
    (("H800",), _rates(**_HOPPER_SXM, dram_tbs=3.35)),      # H800 SXM5 datasheet (NVLink cut, compute as H100)
    (("H800", "PCIe"), _rates(**_HOPPER_PCIE, dram_tbs=2.0)),
    # A100 datasheet: 40GB (SXM4 and PCIe) 1555 GB/s, 80GB SXM4 2039, 80GB PCIe 1935.
    (("A100",), _rates(**_AMPERE, dram_tbs=1.555)),
    (("A100", "80GB"), _rates(**_AMPERE, dram_tbs=2.039)),
    (("A100", "80GB", "PCIe"), _rates(**_AMPERE, dram_tbs=1.935)),
    (("L40S",), _rates(bf16=362.0, tf32=183.0, fp32=91.6, dram_tbs=0.864)),  # L40S datasheet
]

NOTE = ("% of peak is against the datasheet's dense rate (fastcnn/bench/peaks.py); datasheet "
        "rates are leads, not measurements: sustained clocks and power limits are lower.")


def _words(name):
    return set(re.split(r"[\s\-_]+", name.lower()))


def peak_for(gpu_name):
    """(matched row's words joined by spaces, rates) for this GPU, or (None, None) when
    it is not in the table."""
    if not gpu_name:
        return None, None
    words = _words(gpu_name)
    hits = [(key, rates) for key, rates in PEAKS if {w.lower() for w in key} <= words]
    if not hits:
        return None, None
    key, rates = max(hits, key=lambda hit: len(hit[0]))
    return " ".join(key), dict(rates)


def compute_dtype(dtype: str, tf32: bool = True) -> str:
    """The tensor-core rate a dtype runs at: fp32 convolutions and matmuls use TF32
    when PyTorch's allow_tf32 flags say so (cuDNN's default for convolutions)."""
    if dtype == "fp32":
        return "tf32" if tf32 else "fp32"
    return dtype
