"""Label sets: labeling with a value model (infer), relabel, the label-set writer (write), parts
and export. The math is recap_data/label_math; the pictures of label sets recap_data/reports."""
