//! Whether this broker serves a coordinator shard (the state of one internal partition):
//! always on a single node; in a cluster while it leads the partition (`coordinators`).

/// Whether a coordinator shard (the state of one internal partition) is served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Yes, as the partition's leader at this epoch (0 on a single node, which always
    /// does).
    Leader(i32),
    /// This broker leads the partition at this epoch and is loading its state.
    Loading(i32),
    /// Another broker does.
    No,
}
