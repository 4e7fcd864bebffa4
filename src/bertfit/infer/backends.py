"""Inference backends: the same `logits(split)` from the PyTorch model or an exported ONNX graph.

The ONNX backend needs neither torch nor transformers: a cold `bertfit predict` on an export skips their imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bertfit.data.batching import TokenizedSplit, eval_batches, pad_rows
from bertfit.errors import BertfitError

if TYPE_CHECKING:
    import torch

    from bertfit.infer.engine import InferenceContext


class TorchBackend:
    """The PyTorch classifier on the context's device."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, context: InferenceContext):
        self.model, self.context = model.to(context.device), context

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        from bertfit.infer.engine import row_logits

        return row_logits(self.model, split, self.context)


class OnnxBackend:
    """An exported model file run by ONNX Runtime on the CPU, batched like the engine: longest rows first."""

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
        self.pad_id, self.batch_size = pad_id, batch_size
        self.width = self.session.get_outputs()[0].shape[-1]
        self.name = "onnx-int8" if ".int8." in Path(path).name else "onnx-fp32"

    def logits(self, split: TokenizedSplit) -> np.ndarray:
        outputs = np.zeros((len(split), self.width), dtype=np.float32)
        for rows in eval_batches(split.lengths, self.batch_size):
            input_ids, attention_mask = pad_rows(split, rows, self.pad_id)
            feed = {"input_ids": input_ids, "attention_mask": attention_mask}
            outputs[rows] = self.session.run(["logits"], feed)[0]
        return outputs
