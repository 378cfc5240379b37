//! Reading and writing datasets: the generic format and the table reader it is built on.

pub mod generic;
pub mod table;
