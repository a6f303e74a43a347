"""Training loops for the recipes methods declare (``methods.recipes``): triplet/contrastive tuples with mining,
and classification with ArcFace; where a run starts from (``initialise``). Built on the evaluator."""
