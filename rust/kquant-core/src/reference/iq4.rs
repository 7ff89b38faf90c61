//! Shared non-linear 4-bit machinery of IQ4_NL and IQ4_XS.
