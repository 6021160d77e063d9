//! pesto, and pasta's `-c` control socket it talks to: the published ports of a running pasta shown, added, deleted or replaced without restarting it.
//!
//! Podman 6 (`rootless_port_forwarder = "pasta"`) starts pasta with `-c SOCKET` and runs
//! `pesto --add|--delete -t|-u ADDR/PORT[-END] ... SOCKET` per container. pesto's own socket
//! protocol is not documented, and both ends are this binary: one JSON request per connection
//! (`{"show":bool,"ops":[{"op":"replace"|"add"|"delete","proto":"tcp"|"udp","spec":"..."},
//! {"op":"clear"}]}`), one JSON reply (`{"before":[...],"after":[...]}` or `{"error":"..."}`).
//!
//! As pesto's: specifiers after `-A/--add` are added, after `-D/--delete` deleted, and those
//! before either replace the whole table; `-C/--clear` empties it. A request is carried out
//! whole or not at all: a specifier that does not parse changes nothing, and a port that cannot
//! be bound undoes what the request did before it.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use serde::{Deserialize, Serialize};
use vswitch_nat::Proto;

use super::pasta::binds;
use super::portspec::{self, PortSpec};
use super::stack::{Forward, Stack};

/// Larger requests are refused.
const MAX_REQUEST: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Op {
    Replace { proto: String, spec: String },
    Add { proto: String, spec: String },
    Delete { proto: String, spec: String },
    Clear,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Request {
    show: bool,
    ops: Vec<Op>,
}

/// One published port, as pesto shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Rule {
    proto: String,
    host: SocketAddr,
    guest: SocketAddr,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default)]
    before: Vec<Rule>,
    #[serde(default)]
    after: Vec<Rule>,
}

/// `-A`/`-D`: given any number of times, each occurrence's place kept (a Count flag keeps only
/// its last one's).
fn mode(id: &'static str, short: char, help: &'static str) -> Arg {
    Arg::new(id).short(short).long(id).action(ArgAction::Append).num_args(0).default_missing_value("1").help(help)
}

fn command() -> Command {
    let spec = |id: &'static str, short: char, long: &'static str, help: &'static str| {
        Arg::new(id).short(short).long(long).value_name("SPEC").action(ArgAction::Append).allow_hyphen_values(false).help(help)
    };
    Command::new("pesto")
        .about("Shows and changes the published ports of a running pasta (vswitch's pesto)")
        .override_usage("pesto [OPTION]... PATH")
        .disable_version_flag(true)
        .arg(Arg::new("debug").short('d').long("debug").action(ArgAction::SetTrue).help("Print the request and the reply on stderr"))
        .arg(Arg::new("show").short('s').long("show").action(ArgAction::SetTrue).help("Show the table before and after the changes"))
        .arg(mode("add", 'A', "Add the specifiers that follow"))
        .arg(mode("delete", 'D', "Delete the specifiers that follow"))
        .arg(
            Arg::new("clear")
                .short('C')
                .long("clear")
                .value_name("PIF")
                .action(ArgAction::Append)
                .help("Delete every rule (whatever PIF names: this pasta keeps one table)"),
        )
        .arg(spec("tcp", 't', "tcp-ports", "TCP ports forwarded from the host to the namespace: none or [ADDR/]P[-P][:P[-P]],..."))
        .arg(spec("udp", 'u', "udp-ports", "UDP ports forwarded from the host to the namespace (as -t)"))
        .arg(spec("tcp_ns", 'T', "tcp-ns", "Not supported: forwarding from the namespace to the host"))
        .arg(spec("udp_ns", 'U', "udp-ns", "Not supported: forwarding from the namespace to the host"))
        .arg(Arg::new("version").long("version").action(ArgAction::SetTrue).help("Print the version and exit"))
        .arg(Arg::new("path").value_name("PATH").value_parser(clap::value_parser!(PathBuf)).help("pasta's control socket (its -c)"))
}

/// One option of pesto's command line whose place in it matters.
#[derive(Debug, Clone)]
enum Item {
    /// `--add` or `--delete`: what the specifiers after it do.
    Mode(&'static str),
    Clear,
    Spec(Proto, String),
}

/// The request the command line asks for, in the order its options came; Err names what is wrong.
fn request(m: &clap::ArgMatches) -> Result<Request, String> {
    for id in ["tcp_ns", "udp_ns"] {
        if m.contains_id(id) && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            return Err(format!("-{}: forwarding from the namespace to the host is not supported through pesto", &id[..1].to_uppercase()));
        }
    }
    // Modes and specifiers by their index, sorted back into command-line order.
    let mut seq: Vec<(usize, Item)> = Vec::new();
    for (id, item) in [("add", Item::Mode("add")), ("delete", Item::Mode("delete")), ("clear", Item::Clear)] {
        seq.extend(m.indices_of(id).into_iter().flatten().map(|i| (i, item.clone())));
    }
    for (id, proto) in [("tcp", Proto::Tcp), ("udp", Proto::Udp)] {
        if let (Some(idx), Some(vals)) = (m.indices_of(id), m.get_many::<String>(id)) {
            seq.extend(idx.zip(vals).map(|(i, v)| (i, Item::Spec(proto, v.clone()))));
        }
    }
    seq.sort_by_key(|(i, _)| *i);
    let mut mode = "replace";
    let mut ops = Vec::new();
    for (_, item) in seq {
        match item {
            Item::Clear => ops.push(Op::Clear),
            Item::Mode(m) => mode = m,
            Item::Spec(proto, spec) => {
                portspec::parse(&spec).map_err(|e| format!("-{}: {e}", if proto == Proto::Tcp { 't' } else { 'u' }))?;
                let proto = proto.name().to_string();
                ops.push(match mode {
                    "add" => Op::Add { proto, spec },
                    "delete" => Op::Delete { proto, spec },
                    _ => Op::Replace { proto, spec },
                });
            }
        }
    }
    let show = m.get_flag("show");
    if ops.is_empty() && !show {
        return Err("nothing to do: give -s, -C, or port specifiers (-t, -u)".into());
    }
    Ok(Request { show, ops })
}

/// Runs pesto; returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let m = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    if m.get_flag("version") {
        println!("pesto (vswitch {} pesto personality)", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let Some(path) = m.get_one::<PathBuf>("path") else {
        eprintln!("pesto: no PATH: give the control socket pasta was started with (-c)");
        return 1;
    };
    let req = match request(&m) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pesto: {e}");
            return 1;
        }
    };
    let debug = m.get_flag("debug");
    if debug {
        eprintln!("pesto: request {}", serde_json::to_string(&req).unwrap_or_default());
    }
    let reply = match ask(path, &req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pesto: {}: {e}", path.display());
            return 1;
        }
    };
    if debug {
        eprintln!("pesto: reply {}", serde_json::to_string(&reply).unwrap_or_default());
    }
    if req.show {
        for (title, rules) in [("before", &reply.before), ("after", &reply.after)] {
            println!("Forwarding rules {title}:");
            for r in rules {
                println!("    {} {} => {}", r.proto.to_uppercase(), r.host, r.guest);
            }
        }
    }
    match reply.error {
        Some(e) => {
            eprintln!("pesto: {e}");
            1
        }
        None => 0,
    }
}

fn ask(path: &std::path::Path, req: &Request) -> io::Result<Reply> {
    let mut c = UnixStream::connect(path)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(&serde_json::to_vec(req)?)?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("the reply is not pesto's: {e}")))
}

/// Serves pesto's requests on `listener` (pasta's `-c`), one connection at a time, forever.
pub fn serve(listener: UnixListener, stack: &Stack) {
    super::api::each_connection(listener, "pesto", |c| serve_one(c, stack));
}

fn serve_one(mut c: UnixStream, stack: &Stack) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    (&mut c).take(MAX_REQUEST as u64 + 1).read_to_end(&mut buf)?;
    let reply = if buf.len() > MAX_REQUEST {
        Reply { error: Some(format!("request over {MAX_REQUEST} bytes")), ..Reply::default() }
    } else {
        match serde_json::from_slice::<Request>(&buf) {
            Ok(req) => apply(stack, &req),
            Err(e) => Reply { error: Some(format!("bad request: {e}")), ..Reply::default() },
        }
    };
    c.write_all(&serde_json::to_vec(&reply)?)?;
    Ok(())
}

fn rules(stack: &Stack) -> Vec<Rule> {
    stack.forwards().into_iter().map(|f| Rule { proto: f.proto.name().to_string(), host: f.host, guest: f.guest }).collect()
}

/// Carries out a request whole, or undoes it and says why.
fn apply(stack: &Stack, req: &Request) -> Reply {
    let before = rules(stack);
    let mut done = Done::default();
    let r = req.ops.iter().try_for_each(|op| run_op(stack, op, &mut done));
    let error = match r {
        Ok(()) => None,
        Err(e) => {
            done.undo(stack);
            Some(e)
        }
    };
    Reply { error, before, after: rules(stack) }
}

/// What a request changed so far, to undo it.
#[derive(Default)]
struct Done {
    added: Vec<u64>,
    removed: Vec<Forward>,
    /// The table was emptied for this request's replacing specifiers already.
    replaced: bool,
}

impl Done {
    fn remove(&mut self, stack: &Stack, f: Forward) {
        if stack.remove_forward(f.id) {
            // One this request added is simply gone again; only what was there before comes back.
            match self.added.iter().position(|&id| id == f.id) {
                Some(i) => {
                    self.added.swap_remove(i);
                }
                None => self.removed.push(f),
            }
        }
    }

    fn undo(self, stack: &Stack) {
        for id in self.added {
            stack.remove_forward(id);
        }
        for f in self.removed {
            if let Err(e) = stack.add_forward(f.proto, f.host, f.guest) {
                log::warn!("pesto: {}/{} could not be published again: {e}", f.host, f.proto.name());
            }
        }
    }
}

fn proto_of(name: &str) -> Result<Proto, String> {
    match name {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        other => Err(format!("unknown protocol {other:?}: expected tcp or udp")),
    }
}

fn run_op(stack: &Stack, op: &Op, done: &mut Done) -> Result<(), String> {
    let (kind, proto, spec) = match op {
        Op::Clear => {
            stack.forwards().into_iter().for_each(|f| done.remove(stack, f));
            return Ok(());
        }
        Op::Replace { proto, spec } => ("replace", proto, spec),
        Op::Add { proto, spec } => ("add", proto, spec),
        Op::Delete { proto, spec } => ("delete", proto, spec),
    };
    let proto = proto_of(proto)?;
    let parsed = portspec::parse(spec)?;
    if kind == "replace" && !done.replaced {
        done.replaced = true;
        stack.forwards().into_iter().for_each(|f| done.remove(stack, f));
    }
    let (addr, maps) = match parsed {
        PortSpec::None => return Ok(()),
        PortSpec::Auto => return Err(format!("{spec}: auto is not supported through pesto")),
        PortSpec::Ports { every: true, .. } => return Err(format!("{spec}: all (or only exclusions) is not supported through pesto")),
        PortSpec::Ports { addr, maps, .. } => (addr, maps),
    };
    for (host, ns) in maps {
        if kind == "delete" {
            let gone: Vec<Forward> = stack
                .forwards()
                .into_iter()
                .filter(|f| f.proto == proto && f.host.port() == host && addr.is_none_or(|a| f.host.ip() == a))
                .collect();
            if gone.is_empty() {
                return Err(format!(
                    "{}{host}/{}: no such forwarding rule",
                    addr.map(|a| format!("{a}/")).unwrap_or_default(),
                    proto.name()
                ));
            }
            gone.into_iter().for_each(|f| done.remove(stack, f));
            continue;
        }
        for (h, guest) in binds(stack, addr, host, ns) {
            match stack.add_forward(proto, h, guest) {
                Ok(f) => done.added.push(f.id),
                Err(e) => return Err(format!("{h}/{}: {e}", proto.name())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Result<Request, String> {
        let m = command().try_get_matches_from(std::iter::once("pesto").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        request(&m)
    }

    fn op(kind: &str, proto: &str, spec: &str) -> Op {
        let (proto, spec) = (proto.to_string(), spec.to_string());
        match kind {
            "add" => Op::Add { proto, spec },
            "delete" => Op::Delete { proto, spec },
            _ => Op::Replace { proto, spec },
        }
    }

    #[test]
    fn options_keep_their_order() {
        // Podman 6's calls.
        let r = req(&["--add", "-t", "0.0.0.0/8080", "-t", "[::]/8080", "/run/x/pasta.sock"]).unwrap();
        assert_eq!(r.ops, vec![op("add", "tcp", "0.0.0.0/8080"), op("add", "tcp", "[::]/8080")]);
        let r = req(&["--delete", "-u", "0.0.0.0/53", "/s"]).unwrap();
        assert_eq!(r.ops, vec![op("delete", "udp", "0.0.0.0/53")]);
        // Replacing first, then a deletion and an addition, and a clear between.
        let r = req(&["-s", "-t", "80", "-D", "-u", "53", "-C", "HOST", "-A", "-t", "90:9090", "/s"]).unwrap();
        assert!(r.show);
        assert_eq!(r.ops, vec![op("replace", "tcp", "80"), op("delete", "udp", "53"), Op::Clear, op("add", "tcp", "90:9090")]);
        // Modes given more than once keep each place.
        let r = req(&["-A", "-t", "1", "-D", "-t", "2", "-A", "-t", "3", "/s"]).unwrap();
        assert_eq!(r.ops, vec![op("add", "tcp", "1"), op("delete", "tcp", "2"), op("add", "tcp", "3")]);
        assert_eq!(req(&["-s", "/s"]).unwrap(), Request { show: true, ops: vec![] });
    }

    #[test]
    fn bad_command_lines_name_what_is_wrong() {
        assert!(req(&["/s"]).unwrap_err().contains("nothing to do"));
        assert!(req(&["-A", "-t", "0", "/s"]).unwrap_err().contains("-t: invalid port"));
        assert!(req(&["-A", "-T", "80", "/s"]).unwrap_err().contains("-T"));
        assert!(req(&["--bogus", "/s"]).unwrap_err().contains("--bogus"));
        assert_eq!(main(vec!["pesto".into(), "--version".into()]), 0);
        assert_eq!(main(vec!["pesto".into(), "-s".into()]), 1, "no PATH");
        assert_eq!(main(vec!["pesto".into(), "-s".into(), "/nonexistent/pesto.sock".into()]), 1);
    }

    #[test]
    fn the_protocol_round_trips() {
        let r = Request { show: true, ops: vec![op("add", "tcp", "8080"), Op::Clear] };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"show":true,"ops":[{"op":"add","proto":"tcp","spec":"8080"},{"op":"clear"}]}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert!(proto_of("sctp").is_err());
    }
}
