"""The one inference engine (eval mode, batched logits) and the Predictor built on it."""

# Kept free of heavy imports so `bertfit --help` can list the choices without loading torch.
# An exported variant is ENGINE-PRECISION; `onnx` alone means the int8 file when exported, else fp32.
ENGINES = ("onnx", "openvino", "ct2")
PRECISIONS = ("fp32", "int8")
VARIANTS = tuple(f"{engine}-{precision}" for engine in ENGINES for precision in PRECISIONS)
BACKENDS = ("auto", "torch", "onnx", *VARIANTS)
# engine -> (module to import, the bertfit extra that installs it)
ENGINE_PACKAGES = {"onnx": ("onnxruntime", "serve"), "openvino": ("openvino", "openvino"), "ct2": ("ctranslate2", "ct2")}


def engine_of(variant: str) -> str:
    """onnx-int8 -> onnx."""
    return variant.split("-", 1)[0]
