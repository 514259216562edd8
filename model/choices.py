"""The values PRECISION/--precision, DEVICE/--device and RUNTIME/--runtime accept, importable without torch
(the serve command and the gateway parse them without loading a model)."""

PRECISIONS = ("auto", "fp32", "bf16", "int8")
DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("auto", "torch", "openvino")
WHY_MODES = ("exact", "adaptive")  # the fine heat map: every position, or the drill-down (model/adaptive_occlusion.py)
