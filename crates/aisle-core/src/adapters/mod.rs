//! placeholder
pub struct LoadOptions;
