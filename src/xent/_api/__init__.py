"""The Python API of xent, one module per family: each validates its arguments,
shapes the arrays for the kernels and calls the compiled loops (xent._kernels).

validation   argument checks and conversions shared by every family (never runs a kernel)
normalizers  log_softmax, softmax, logsumexp
  class_axes         their axis: int, tuple, None or (); merged views and blocks of rows
  normalizer_dtypes  their dtype=
  scaled_logsumexp   logsumexp's b= and return_sign=
multiclass   cross_entropy, nll_loss, focal_loss (class indices and probability targets)
binary       binary_cross_entropy, binary_cross_entropy_with_logits
pointwise    the elementwise driver binary and kl_div share (broadcasting, chunks, threads)
divergences  kl_divergence, entropy
kl_div       kl_div (PyTorch's signature)
evaluate     evaluate, Evaluator, Evaluation
"""
