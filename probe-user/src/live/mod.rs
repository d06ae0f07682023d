//! Views of a running session: one line per connection (`synscope trace`) and the live
//! table (`synscope top`).

pub mod connections;
pub mod top;
