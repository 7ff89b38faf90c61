//! Shared code of kquant's fuzz targets: what each target asserts about a parse
//! ([`check`]) and the structure-aware mutator that feeds it ([`mutate`], over the field
//! positions found by [`fields`]).

pub mod check;
pub mod fields;
pub mod mutate;
