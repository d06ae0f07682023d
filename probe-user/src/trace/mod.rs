//! Tracing: loading the kernel programs with this kernel's offsets, choosing a hook per stage
//! (the plan in `hooks`), and the session loop that feeds the model and answers views.

pub mod clock;
pub mod hooks;
pub mod loader;
pub mod pending;
pub mod session;
pub mod signals;
pub mod skipped;

pub use loader::TraceOptions;
pub use session::{EventTap, Session, SessionHandle};
