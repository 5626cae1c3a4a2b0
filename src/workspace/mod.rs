//! The directory a session's code works in (`/workspace` in the sandbox): choosing and checking
//! it ([`setup`]), what each block changed ([`changes`], over [`snapshot`]s that follow git's
//! ignore rules, [`gitignore`]), how much disk it uses ([`usage`], for `workspace_limit_mb`), and
//! its state at session start with the patch from there to now ([`git`]).
//!
//! Nothing here knows about terminals or the engine: executors take snapshots around each block
//! through [`ChangeTracker`], the binary's edge prepares workspaces and exports patches.

pub mod changes;
pub mod git;
pub mod gitignore;
pub mod session;
pub mod setup;
pub mod snapshot;
pub mod usage;

pub use changes::{ChangeTracker, HostTracker, WorkspaceDelta, WorkspaceError, describe};
pub use setup::{Refused, WorkspaceRecord, check_dir};
