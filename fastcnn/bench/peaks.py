"""Datasheet peak rates per GPU, for the "% of peak" column and the roofline chart.

These are the vendor's dense (no sparsity) datasheet figures at boost clock: leads,
not measurements. Sustained clocks under load, power capping and the SKU (SXM vs
PCIe/NVL) move the reachable rate, so a kernel at 70-80 % of these numbers is
already near what the hardware delivers."""

# name fragment (matched against torch.cuda.get_device_name(), first hit wins):
# TFLOP/s per compute dtype, and DRAM TB/s.
PEAKS = [
    ("H200", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0, "dram_tbs": 4.8}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0, "dram_tbs": 2.0}),
    ("H100 NVL", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0, "dram_tbs": 3.9}),
    ("H100", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.0, "fp32": 67.0, "dram_tbs": 3.35}),  # SXM
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5, "dram_tbs": 2.039}),
    ("L40S", {"bf16": 362.0, "fp16": 362.0, "tf32": 183.0, "fp32": 91.6, "dram_tbs": 0.864}),
]

NOTE = ("% of peak is against the datasheet's dense rate (fastcnn/bench/peaks.py); datasheet "
        "rates are leads, not measurements: sustained clocks and power limits are lower.")


def peak_for(gpu_name):
    """(matched name, rates) for this GPU, or (None, None) when it is not in the table."""
    if not gpu_name:
        return None, None
    for fragment, rates in PEAKS:
        if fragment.lower() in gpu_name.lower():
            return fragment, dict(rates)
    return None, None


def compute_dtype(dtype: str, tf32: bool = True) -> str:
    """The tensor-core rate a dtype runs at: fp32 convolutions and matmuls use TF32
    when PyTorch's allow_tf32 flags say so (cuDNN's default for convolutions)."""
    if dtype == "fp32":
        return "tf32" if tf32 else "fp32"
    return dtype
