//! Q4_0, Q4_1, Q5_0, Q5_1 and IQ4_NL.
