"""The one inference engine (eval mode, batched logits) and the Predictor built on it."""

# Kept free of heavy imports so `bertfit --help` can list the choices without loading torch.
# An exported variant is ENGINE-PRECISION: the name says what runs.
ENGINES = ("onnx", "openvino", "ct2")
PRECISIONS = ("fp32", "int8")
VARIANTS = tuple(f"{engine}-{precision}" for engine in ENGINES for precision in PRECISIONS)
# static: a static student (bertfit.infer.static), its own run or a variant beside its teacher's exports.
STATIC = "static"
BACKENDS = ("auto", "pytorch", *VARIANTS, STATIC)
# Earlier short names, still accepted: `onnx` is the exact-precision graph (int8 is named, never implied).
BACKEND_ALIASES = {"torch": "pytorch", "onnx": "onnx-fp32"}
# engine -> (module to import, the bertfit extra that installs it)
ENGINE_PACKAGES = {"onnx": ("onnxruntime", "serve"), "openvino": ("openvino", "openvino"), "ct2": ("ctranslate2", "ct2")}


def engine_of(variant: str) -> str:
    """onnx-int8 -> onnx."""
    return variant.split("-", 1)[0]


def backend_name(name: str) -> str:
    """A backend as the Predictor names it: an alias (torch, onnx) becomes its full name; unknown names are kept."""
    return BACKEND_ALIASES.get(name, name)
