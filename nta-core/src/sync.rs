//! Atomics used by the lock-free protocols, swappable for loom's.
//!
//! `remote.rs` imports its atomics from `crate::sync`. The loom model in
//! `tests/loom_remote.rs` compiles the same file with a `sync` module that
//! re-exports `loom::sync`, so the exact code that ships is model-checked.

pub use std::sync::atomic;
