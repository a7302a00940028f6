"""fastcnn.info(): which backends work on this machine, and why not."""
import os

import torch


def backend_status() -> dict:
    """{backend: reason it cannot run here, or None when it can}."""
    status = {}
    try:
        import triton
        if torch.cuda.is_available():
            status["triton"] = None
        elif os.environ.get("TRITON_INTERPRET", "0") == "1":
            status["triton"] = None
        else:
            status["triton"] = ("no CUDA GPU (set TRITON_INTERPRET=1 to run the kernels on the CPU "
                                f"through Triton {triton.__version__}'s interpreter)")
    except ImportError as e:
        status["triton"] = f"triton cannot be imported: {e}"
    from fastcnn import _ext
    status["cuda"] = _ext.unavailable_reason()
    if not torch.cuda.is_available():
        status["cudnn"] = "no CUDA GPU visible to PyTorch"
    elif not torch.backends.cudnn.is_available():
        status["cudnn"] = "PyTorch was built without cuDNN"
    else:
        status["cudnn"] = None
    status["reference"] = None
    return status


def environment() -> dict:
    import triton
    import fastcnn
    env = {"fastcnn": fastcnn.__version__, "torch": torch.__version__, "triton": triton.__version__,
           "cuda_runtime": torch.version.cuda, "gpu": None,
           "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1"}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def info(file=None) -> dict:
    """Print (and return) the environment and which backends work here."""
    env, status = environment(), backend_status()
    lines = [f"fastcnn {env['fastcnn']}  torch {env['torch']}  triton {env['triton']}  "
             f"CUDA {env['cuda_runtime'] or '-'}  GPU: {env['gpu'] or 'none'}"]
    for name, reason in status.items():
        lines.append(f"  {name:<10} {'ok' if reason is None else 'unavailable: ' + reason}")
    print("\n".join(lines), file=file)
    return {"environment": env, "backends": status}
