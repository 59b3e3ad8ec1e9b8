//! What simsd exports besides its binary: the names and numbers of the
//! kernel state it owns, so that the tests and tools that inspect that
//! state import them instead of copying them.

pub mod owned;
