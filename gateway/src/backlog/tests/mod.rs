//! Tests of the backlog: behaviour tables, crash recovery, overflow, a model-based proptest
//! and an ignored throughput measurement.
mod basic;
mod crash;
mod overflow;
mod perf;
mod prop;
mod support;
