//! Picks the kernels for the CPU we run on, once.
//!
//! The portable `reference` kernels define correct output. An instruction-set path
//! (`arch::x86_64::avx2`, `arch::aarch64::neon`) overrides only the entries it
//! accelerates; every other entry of a table stays the reference one. Nothing is
//! compiled for a particular CPU: the SIMD functions carry `#[target_feature]` and are
//! only reachable through a detection token, so the binary runs everywhere.
//!
//! `KQUANT_ISA=scalar|avx2|neon` (read once) forces a path; forcing one this CPU
//! lacks makes every operation fail with an error naming the missing features.

use std::sync::OnceLock;

use crate::arch;
use crate::error::{Error, Result};
use crate::reference::{self, Kernels};
use crate::types::QuantType;

/// An instruction-set path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// The portable reference kernels.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// aarch64 Advanced SIMD; the int8 dots use SDOT where the CPU has it.
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
        }
    }

    /// Parses `scalar`, `avx2` or `neon` in any letter case.
    pub fn from_name(s: &str) -> Result<Isa> {
        Isa::ALL.iter().copied().find(|i| i.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            Error::invalid(format!("KQUANT_ISA={s:?} is not a known instruction set; expected scalar, avx2 or neon"))
        })
    }

    /// Whether this CPU (and this build's target) can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_token().is_some(),
            Isa::Neon => neon_token().is_some(),
        }
    }

    /// What the path needs, for error messages.
    fn requirement(self) -> &'static str {
        match self {
            Isa::Scalar => "nothing",
            Isa::Avx2 => "an x86-64 CPU with AVX2, FMA and F16C",
            Isa::Neon => "an aarch64 CPU (Advanced SIMD)",
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One concrete kernel set: an ISA plus the optional extensions it was built with.
/// Tests walk every variant the CPU can run (NEON with and without SDOT, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub isa: Isa,
    /// aarch64 only: use the SDOT instruction (FEAT_DotProd) in the int8 dots.
    pub dotprod: bool,
}

impl Variant {
    /// The fastest variant of `isa` this CPU runs.
    pub fn best(isa: Isa) -> Variant {
        Variant { isa, dotprod: isa == Isa::Neon && has_dotprod() }
    }

    pub fn name(self) -> String {
        if self.dotprod {
            format!("{}+dotprod", self.isa.name())
        } else {
            self.isa.name().to_string()
        }
    }

    pub fn is_available(self) -> bool {
        self.isa.is_available() && (!self.dotprod || has_dotprod())
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_token() -> Option<arch::x86_64::avx2::Avx2> {
    static T: OnceLock<Option<arch::x86_64::avx2::Avx2>> = OnceLock::new();
    *T.get_or_init(arch::x86_64::avx2::Avx2::detect)
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_token() -> Option<()> {
    None
}

#[cfg(target_arch = "aarch64")]
fn neon_token() -> Option<arch::aarch64::neon::Neon> {
    static T: OnceLock<Option<arch::aarch64::neon::Neon>> = OnceLock::new();
    *T.get_or_init(arch::aarch64::neon::Neon::detect)
}

#[cfg(not(target_arch = "aarch64"))]
fn neon_token() -> Option<()> {
    None
}

#[cfg(target_arch = "aarch64")]
fn has_dotprod() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::arch::is_aarch64_feature_detected!("dotprod"))
}

#[cfg(not(target_arch = "aarch64"))]
fn has_dotprod() -> bool {
    false
}

/// The best path this CPU runs, ignoring `KQUANT_ISA`.
pub fn detect() -> Isa {
    if Isa::Avx2.is_available() {
        Isa::Avx2
    } else if Isa::Neon.is_available() {
        Isa::Neon
    } else {
        Isa::Scalar
    }
}

/// Every path this CPU runs, scalar first.
pub fn available() -> Vec<Isa> {
    Isa::ALL.iter().copied().filter(|i| i.is_available()).collect()
}

/// Every kernel variant this CPU runs, scalar first.
pub fn available_variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for isa in available() {
        v.push(Variant { isa, dotprod: false });
        if isa == Isa::Neon && has_dotprod() {
            v.push(Variant { isa, dotprod: true });
        }
    }
    v
}

/// The path `KQUANT_ISA` (given here as `forced`) selects: `None`, empty or `auto`
/// means the best detected one.
pub fn select(forced: Option<&str>) -> Result<Isa> {
    let Some(s) = forced.map(str::trim).filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("auto")) else {
        return Ok(detect());
    };
    let isa = Isa::from_name(s)?;
    if !isa.is_available() {
        return Err(Error::invalid(format!(
            "KQUANT_ISA={} asks for the {} kernels, which need {}; this CPU or build does not have them \
             (available: {})",
            s,
            isa.name(),
            isa.requirement(),
            available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(isa)
}

/// The path in use, decided once from the CPU and `KQUANT_ISA`.
pub fn active() -> Result<Isa> {
    static ACTIVE: OnceLock<Result<Isa>> = OnceLock::new();
    ACTIVE.get_or_init(|| select(std::env::var("KQUANT_ISA").ok().as_deref())).clone()
}

/// The entries an ISA path replaces; `None` keeps the reference entry.
#[derive(Clone, Copy, Default)]
pub(crate) struct Overrides {
    pub quantize: Option<reference::QuantizeFn>,
    pub dequantize: Option<reference::DequantizeFn>,
    pub vec_dot: Option<reference::VecDotFn>,
}

fn overrides(v: Variant, t: QuantType) -> Result<Overrides> {
    if !v.is_available() {
        return Err(Error::invalid(format!(
            "the {} kernels need {}, which this CPU lacks",
            v.name(),
            v.isa.requirement()
        )));
    }
    Ok(match v.isa {
        Isa::Scalar => Overrides::default(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => arch::x86_64::avx2::overrides(avx2_token().expect("checked above"), t),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => arch::aarch64::neon::overrides(neon_token().expect("checked above"), v.dotprod, t),
        #[allow(unreachable_patterns)]
        _ => Overrides::default(),
    })
}

/// The kernel table of `t` for `variant`: accelerated entries replace the reference
/// ones, the rest are the reference's. An error when the CPU lacks the variant or
/// the format is not implemented yet.
pub fn kernels_for_variant(variant: Variant, t: QuantType) -> Result<Kernels> {
    let r = reference::kernels(t).ok_or_else(|| Error::invalid(format!("{} is not implemented yet", t.name())))?;
    let o = overrides(variant, t)?;
    Ok(Kernels {
        quantize: o.quantize.unwrap_or(r.quantize),
        dequantize: o.dequantize.unwrap_or(r.dequantize),
        // A format without a dot (activation-only) keeps having none.
        vec_dot: r.vec_dot.map(|rd| o.vec_dot.unwrap_or(rd)),
    })
}

/// `kernels_for_variant` with the fastest variant of `isa`.
pub fn kernels_for(isa: Isa, t: QuantType) -> Result<Kernels> {
    kernels_for_variant(Variant::best(isa), t)
}

/// Which entries of `t`'s table `variant` accelerates: (quantize, dequantize, vec_dot).
pub fn accelerated(variant: Variant, t: QuantType) -> (bool, bool, bool) {
    match overrides(variant, t) {
        Ok(o) => (o.quantize.is_some(), o.dequantize.is_some(), o.vec_dot.is_some()),
        Err(_) => (false, false, false),
    }
}

/// The table `ops` uses for `t`: the active path's, built once per type.
pub fn kernels(t: QuantType) -> Result<&'static Kernels> {
    const N: usize = QuantType::ALL.len();
    static TABLES: OnceLock<Result<Vec<Option<Kernels>>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let isa = active()?;
        Ok(QuantType::ALL.iter().map(|&t| kernels_for(isa, t).ok()).collect())
    });
    let tables = tables.as_ref().map_err(Clone::clone)?;
    let i = QuantType::ALL.iter().position(|&x| x == t).expect("every type is in ALL");
    debug_assert!(i < N);
    tables[i].as_ref().ok_or_else(|| Error::invalid(format!("{} is not implemented yet", t.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_parses_and_refuses() {
        assert_eq!(select(None).unwrap(), detect());
        assert_eq!(select(Some("")).unwrap(), detect());
        assert_eq!(select(Some("AUTO")).unwrap(), detect());
        assert_eq!(select(Some("Scalar")).unwrap(), Isa::Scalar);
        assert!(select(Some("sse9")).unwrap_err().to_string().contains("not a known"));
        for isa in Isa::ALL {
            let r = select(Some(isa.name()));
            assert_eq!(r.is_ok(), isa.is_available(), "{isa}");
            if let Err(e) = r {
                assert!(e.to_string().contains("this CPU"), "{e}");
            }
        }
    }

    #[test]
    fn tables_fall_back_to_reference() {
        for v in available_variants() {
            for t in QuantType::ALL {
                let Some(r) = reference::kernels(t) else {
                    assert!(kernels_for_variant(v, t).is_err());
                    continue;
                };
                let k = kernels_for_variant(v, t).unwrap();
                assert_eq!(k.vec_dot.is_some(), r.vec_dot.is_some(), "{t} on {}", v.name());
                if v.isa == Isa::Scalar {
                    assert!(k.quantize as usize == r.quantize as usize);
                }
            }
        }
    }

    #[test]
    fn detection_is_consistent() {
        #[cfg(target_arch = "aarch64")]
        assert_eq!(detect(), Isa::Neon);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            Isa::Avx2.is_available(),
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
        );
        assert!(available().contains(&Isa::Scalar));
    }
}
