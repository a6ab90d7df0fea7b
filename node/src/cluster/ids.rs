//! Node identities. A `NodeId` is also the node's Raft id, so it is never zero (Raft reserves 0
//! for "no node").
use serde::{Deserialize, Serialize};
use std::fmt;

/// A node of the site, configured per node (`[[peers]] id`). Never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct NodeId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node id must be non-zero")]
pub struct ZeroNodeId;

impl NodeId {
    /// `None` for 0, which Raft reserves.
    pub const fn new(id: u64) -> Option<Self> {
        if id == 0 { None } else { Some(Self(id)) }
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for NodeId {
    type Error = ZeroNodeId;

    fn try_from(id: u64) -> Result<Self, Self::Error> {
        Self::new(id).ok_or(ZeroNodeId)
    }
}

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> u64 {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_rejected_everywhere() {
        assert_eq!(NodeId::new(0), None);
        assert_eq!(NodeId::try_from(0), Err(ZeroNodeId));
        assert!(
            postcard::from_bytes::<NodeId>(&postcard::to_stdvec(&0u64).expect("encode")).is_err()
        );
        let id = NodeId::new(7).expect("non-zero");
        let bytes = postcard::to_stdvec(&id).expect("encode");
        assert_eq!(postcard::from_bytes::<NodeId>(&bytes), Ok(id));
        assert_eq!(id.to_string(), "n7");
    }
}
