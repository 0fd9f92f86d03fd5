"""`doclane eval`: quality figures on real data, through the pipeline's own
code (chunking, embedder, index, classifier, parser, extractor).

  search.py    BEIR folders: nDCG@10, Recall@100, MRR@10 per search mode
  classify.py  labels.tsv + texts/: accuracy, macro-F1, confusion matrix
  extract.py   invoice2data folders: per-field exact match after normalisation
  metrics.py   the measures (pytrec_eval, scikit-learn) and latency percentiles
  cache.py     embeddings cached on disk by model and text, so reruns are fast
  commands.py  the click commands
"""
