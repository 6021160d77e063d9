//! vswitchctl's command tree: one file per command group, each a clap struct with `exec()`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::client::{self, ClientError};
use crate::DEFAULT_SOCKET;

mod conntrack;
mod fdb;
mod network;
mod port;
mod route;
mod stats;
mod table;

/// Control vswitchd, the userspace virtual switch for containers.
#[derive(Debug, Parser)]
#[command(name = "vswitchctl", version)]
pub struct Cli {
    /// vswitchd's API socket.
    #[arg(long, global = true, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output: tables for people, JSON for programs.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(Box<network::NetworkCmd>),
    /// Show the forwarding database.
    #[command(subcommand)]
    Fdb(fdb::FdbCmd),
    /// Show per-port, per-worker and gateway counters.
    Stats(stats::StatsCmd),
    /// Manage routes between networks.
    #[command(subcommand)]
    Route(route::RouteCmd),
    /// Show the gateway's neighbour (ARP/NDP) cache.
    #[command(subcommand)]
    Neigh(route::NeighCmd),
    /// Show or flush the flows carried to the host and the world.
    #[command(subcommand)]
    Conntrack(conntrack::ConntrackCmd),
    /// List a container's published ports (`80/tcp -> 0.0.0.0:8080`).
    Port(port::PortCmd),
}

/// What a command needs to talk to the daemon and print.
#[derive(Debug)]
pub struct Ctx {
    socket: PathBuf,
    format: Format,
    rt: tokio::runtime::Runtime,
}

impl Ctx {
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.rt.block_on(client::call(&self.socket, method, path, body)).map(|(_, v)| v)
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// Percent-encodes a path segment (network names are restricted, but IDs and user input are not trusted).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs vswitchctl; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vswitchctl: cannot start: {e}");
            return 1;
        }
    };
    let ctx = Ctx { socket: cli.socket, format: cli.format, rt };
    let r = match cli.cmd {
        Cmd::Network(c) => c.exec(&ctx),
        Cmd::Fdb(c) => c.exec(&ctx),
        Cmd::Stats(c) => c.exec(&ctx),
        Cmd::Route(c) => c.exec(&ctx),
        Cmd::Neigh(c) => c.exec(&ctx),
        Cmd::Conntrack(c) => c.exec(&ctx),
        Cmd::Port(c) => c.exec(&ctx),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}
