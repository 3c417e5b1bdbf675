//! A private PostgreSQL cluster for integration tests: the same harness the
//! library's tests use (`src/store/postgres/cluster.rs`), included here.

#[path = "../../src/store/postgres/cluster.rs"]
mod cluster;

// Test crates that start no cluster do not use it.
#[allow(unused_imports)]
pub use cluster::*;
