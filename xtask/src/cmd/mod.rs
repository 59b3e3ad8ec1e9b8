//! The commands of `cargo xtask`, one file per family; main.rs dispatches.

pub mod bench;
pub mod build;
pub mod demo;
pub mod fuzz;
pub mod package;
pub mod test;
