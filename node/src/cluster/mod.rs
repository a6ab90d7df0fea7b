//! Site membership: partition map, placement, controller planner, failure detector, Raft group (being written; see docs/design/site-ha.md).
