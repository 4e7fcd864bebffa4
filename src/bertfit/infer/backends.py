"""Inference backends: the same `logits(split)` from the PyTorch model or an exported ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bertfit.data.batching import TokenizedSplit
from bertfit.errors import BertfitError
from bertfit.infer.engine import InferenceContext, batch_outputs, row_logits


class TorchBackend:
    """The PyTorch classifier on the context's device."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, context: InferenceContext):
        self.model, self.context = model.to(context.device), context

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        return row_logits(self.model, split, self.context)


class OnnxBackend:
    """An exported model file run by ONNX Runtime on the CPU."""

    def __init__(self, path: Path, pad_id: int, batch_size: int, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise BertfitError("the ONNX backend needs onnxruntime: pip install 'bertfit[serve]'") from None
        options = onnxruntime.SessionOptions()
        # Idle ORT worker threads spin by default; in a server they would starve the event loop and the
        # tokenizer of the same cores between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.context = InferenceContext.cpu(pad_id, batch_size)
        self.width = self.session.get_outputs()[0].shape[-1]
        self.name = "onnx-int8" if ".int8." in Path(path).name else "onnx-fp32"

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        inputs = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        return torch.from_numpy(self.session.run(["logits"], inputs)[0])

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        return batch_outputs(self._forward, self.width, split, self.context)
