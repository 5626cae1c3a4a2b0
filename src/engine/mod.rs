//! The conversation engine: orchestrator task, speaker selection, code blocks, approvals,
//! termination and cost. No terminal code and no I/O beyond the injected traits.

pub mod approval;
pub mod codeblocks;
pub mod context;
pub mod cost;
pub mod orchestrator;
pub mod selection;
pub mod state;
pub mod termination;

pub use orchestrator::{SessionHandle, SessionSetup, start};
