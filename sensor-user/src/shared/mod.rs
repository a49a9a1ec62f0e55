//! Building blocks every stage may use (the import rule's one exception): they
//! import nothing else of this crate.

pub mod budget;
pub mod ids;
pub mod table;
