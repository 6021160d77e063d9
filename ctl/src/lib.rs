//! vswitch's control plane: the model, IPAM, the state store, provisioning, the API server
//! and client; the binaries `vswitchd` and `vswitchctl` are thin shells around it.

pub mod api_types;
pub mod cli;
pub mod client;
pub mod compat;
pub mod confine;
pub mod controller;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod leases;
pub mod model;
pub mod ports;
pub mod provision;
pub mod resolvconf;
pub mod server;
pub mod store;

/// Where the daemon listens unless `--socket` or `VSWITCH_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";
/// Where the daemon keeps its state unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vswitch";
