//! proctor: supervise a team of LLM coding agents; nothing they write runs until a human approves it.
//!
//! The engine (`engine`, `provider`, `executor`, `store`) knows nothing of terminals; front ends
//! (`headless`, `tui`) speak to it only through `protocol::{Op, Event}`.

pub mod cli;
pub mod config;
pub mod engine;
pub mod executor;
pub mod headless;
pub mod protocol;
pub mod provider;
pub mod store;
pub mod text_safety;
pub mod tui;
pub mod workspace;
