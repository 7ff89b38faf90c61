//! IQ3_XXS and IQ3_S with NEON: the quantizers run the eight-lane trial search of
//! `arch::iq3_lanes` (NEON is part of every aarch64 target, so no wrapper is needed
//! for the compiler to vectorize it).

use crate::arch::iq3_lanes;
use crate::reference::{iq3_s, iq3_xxs};

pub fn quantize_iq3_xxs(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    iq3_xxs::quantize_with(x, q, imat, |v, lat, xb, w| iq3_lanes::quantize_sub_block(v, lat, xb, w));
}

pub fn quantize_iq3_s(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    iq3_s::quantize_with(x, q, imat, |v, lat, xb, w| iq3_lanes::quantize_sub_block(v, lat, xb, w));
}

pub fn quantize_iq1_m(x: &[f32], q: &mut [u8], imat: Option<&[f32]>) {
    crate::reference::iq1_m::quantize_with(x, q, imat, |xb, w| crate::arch::iq1_fast::iq1_m_sub_block(xb, w));
}
