//! The conversation engine: orchestrator task, speaker selection, code blocks, approvals,
//! termination and cost. No terminal code and no I/O beyond the injected traits.

pub mod cost;
