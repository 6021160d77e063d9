//! The machinery behind `vswitch-compare`: namespaces, processes, load generators (UDP, DNS, TCP), systems, report.
//!
//! `vswitch-compare` builds each system under test in network namespaces it creates itself,
//! measures it with the same workloads, and tears it down. Everything it creates (namespaces,
//! processes, temporary directories) is owned by a guard that removes it on drop, so a failed
//! or panicking run cleans up after itself; names carry the process id, so two runs never
//! collide and `vswitch-compare cleanup` can find what a killed run left behind.

pub mod chart;
pub mod cmd;
pub mod cpu;
pub mod dns;
pub mod dnsload;
pub mod harness;
pub mod machine;
pub mod nat;
pub mod netns;
pub mod ovs;
pub mod report;
pub mod results;
pub mod rootlesskit;
pub mod scenario;
pub mod systems;
pub mod tcpload;
pub mod udp;
pub mod workloads;

use std::fmt;

/// Why a step of the comparison failed; the message names the step and the cause.
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("invalid JSON: {e}"))
    }
}

/// Builds an [`Error`] from a message.
pub fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

pub type Result<T> = std::result::Result<T, Error>;
