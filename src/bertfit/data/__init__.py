"""From a file to batches of token ids: reading, labels, splits, presets, tokenising and batching, windows, streaming,
inspection."""
