//! placeholder crate root, filled in by later steps.
