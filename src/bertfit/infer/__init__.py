"""The one inference engine (eval mode, batched logits) and the Predictor built on it."""

# Kept free of heavy imports so `bertfit --help` can list the choices without loading torch.
BACKENDS = ("auto", "torch", "onnx", "onnx-fp32", "onnx-int8")
