# Evaluation kernels (evaluate / Evaluator); included by _kernels.pyx.
