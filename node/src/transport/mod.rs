//! QUIC transport between nodes and sites (being written; see docs/design/site-ha.md).
