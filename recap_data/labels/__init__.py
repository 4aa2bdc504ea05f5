"""Label sets: the advantage math, labeling with a value model, relabel, report, export."""
