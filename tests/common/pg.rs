//! A private PostgreSQL cluster for integration tests: the same harness the
//! library's tests use (`src/store/postgres/cluster.rs`), included here.

#[path = "../../src/store/postgres/cluster.rs"]
mod cluster;

pub use cluster::*;
