"""Shipping a run: ONNX export with its self-check, the HTTP service, micro-batching and the page."""
