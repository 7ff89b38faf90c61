//! Scale and minimum searches shared by the k-quants and the weighted legacy formats.
