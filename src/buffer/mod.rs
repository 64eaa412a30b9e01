//! What has been collected and not yet delivered: the in-memory buffer today; a disk buffer
//! that survives restarts goes beside it.

mod memory;

pub use memory::Buffer;
