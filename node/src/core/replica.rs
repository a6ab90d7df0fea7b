//! Primary/backup replication of one partition (being written; see docs/design/site-ha.md).
