"""Data that gets better: a label-error audit with out-of-fold probabilities (`bertfit audit`) and a
labelling loop that picks the next texts to label (`bertfit suggest`)."""
