//! Replica core tests over an in-test network (see `harness`).
mod harness;
mod properties;
mod regressions;
mod scenarios;
mod wan;
mod wire;
