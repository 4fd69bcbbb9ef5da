/* Pointwise losses (binary cross-entropy, kl_div); instantiated by _rows.h. */
