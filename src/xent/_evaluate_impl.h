/* Evaluation rows (loss, rank of the target) for evaluate(); instantiated by _rows.h. */
