//! The benchmarks' shared parts: the system under test, closed-loop load, statistics
//! and the report of the control-plane benchmark (`src/main.rs`), also used by the
//! other benchmark binaries (`src/bin/`).

pub mod access;
pub mod args;
pub mod creation;
pub mod harness;
pub mod idp;
pub mod load;
pub mod proc_cpu;
pub mod raw_sqlite;
pub mod reads;
pub mod report;
pub mod served;
pub mod setup;
pub mod stats;
