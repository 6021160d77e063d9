//! slirp4netns's API socket: one JSON request per connection (`add_hostfwd`, `list_hostfwd`,
//! `remove_hostfwd`), one JSON reply, close; the replies and error texts callers expect.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};
use vswitch_nat::Proto;

use super::stack::Forward;

/// A request that fills this many bytes is refused (slirp4netns reads once into 4096 bytes).
pub const MAX_REQUEST: usize = 4096;

/// What the API changes: the published ports of the running stack (a fake in tests).
pub trait Forwards {
    /// Publishes; Err carries why, for the log (the reply keeps slirp4netns's fixed text).
    fn add(&self, proto: Proto, host: SocketAddr, guest: SocketAddr) -> Result<u64, String>;
    fn remove(&self, id: u64) -> bool;
    fn list(&self) -> Vec<Forward>;
    /// The container's address: `guest_addr`'s default, and the subnet guests must be in.
    fn guest(&self) -> (Ipv4Addr, ipnet::Ipv4Net);
}

fn bad(reason: &str) -> Value {
    json!({"error": {"desc": format!("bad request: {reason}")}})
}

/// Answers one request (the bytes a client sent, JSON with optional trailing whitespace).
pub fn handle(req: &[u8], fw: &dyn Forwards) -> Value {
    if req.len() >= MAX_REQUEST {
        return bad("too large message");
    }
    let Ok(v) = serde_json::from_slice::<Value>(req) else { return bad("cannot parse JSON") };
    let Some(obj) = v.as_object() else { return bad("json_object() failed") };
    let Some(execute) = obj.get("execute").and_then(Value::as_str) else { return bad("no execute found") };
    let args = obj.get("arguments").and_then(Value::as_object);
    match execute {
        "add_hostfwd" => add_hostfwd(args, fw),
        "list_hostfwd" => {
            let entries: Vec<Value> = fw
                .list()
                .iter()
                .map(|f| {
                    json!({"id": f.id, "proto": f.proto.name(), "host_addr": f.host.ip().to_string(), "host_port": f.host.port(),
                           "guest_addr": f.guest.ip().to_string(), "guest_port": f.guest.port()})
                })
                .collect();
            json!({"return": {"entries": entries}})
        }
        "remove_hostfwd" => {
            let Some(id) = args.and_then(|a| a.get("id")).and_then(Value::as_u64).filter(|&id| id > 0) else {
                return bad("remove_hostfwd: bad arguments.id");
            };
            if fw.remove(id) {
                json!({"return": {}})
            } else {
                bad("remove_hostfwd: slirp_remove_hostfwd failed")
            }
        }
        _ => bad("unknown execute"),
    }
}

fn add_hostfwd(args: Option<&Map<String, Value>>, fw: &dyn Forwards) -> Value {
    let get = |k: &str| args.and_then(|a| a.get(k));
    let proto = match get("proto").and_then(Value::as_str) {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => return bad("add_hostfwd: bad arguments.proto"),
    };
    // Missing or empty: the default; anything else must be an IPv4 address.
    let addr = |k: &str, default: Ipv4Addr| match get(k) {
        None | Some(Value::Null) => Some(default),
        Some(Value::String(s)) if s.is_empty() => Some(default),
        Some(Value::String(s)) => s.parse::<Ipv4Addr>().ok(),
        Some(_) => None,
    };
    let port = |k: &str| get(k).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).filter(|&p| p != 0);
    let (guest_default, subnet) = fw.guest();
    let Some(host_addr) = addr("host_addr", Ipv4Addr::UNSPECIFIED) else { return bad("add_hostfwd: bad arguments.host_addr") };
    let Some(host_port) = port("host_port") else { return bad("add_hostfwd: bad arguments.host_port") };
    let Some(guest_addr) =
        addr("guest_addr", guest_default).filter(|a| subnet.contains(a) && *a != subnet.network() && *a != subnet.broadcast())
    else {
        return bad("add_hostfwd: bad arguments.guest_addr");
    };
    let Some(guest_port) = port("guest_port") else { return bad("add_hostfwd: bad arguments.guest_port") };
    let host = SocketAddr::new(IpAddr::V4(host_addr), host_port);
    match fw.add(proto, host, SocketAddr::new(IpAddr::V4(guest_addr), guest_port)) {
        Ok(id) => json!({"return": {"id": id}}),
        Err(e) => {
            log::warn!("add_hostfwd {}/{host}: {e}", proto.name());
            bad("add_hostfwd: slirp_add_hostfwd failed")
        }
    }
}

/// Listens on `path` (an existing file there is replaced), before any confinement.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    UnixListener::bind(path)
}

/// Serves requests one connection at a time, forever.
pub fn serve(listener: UnixListener, fw: &dyn Forwards) {
    each_connection(listener, "API", |c| serve_one(c, fw));
}

/// Hands `one` each connection of `listener` in turn, forever; `what` names the socket in the log.
pub(super) fn each_connection(listener: UnixListener, what: &str, mut one: impl FnMut(UnixStream) -> io::Result<()>) {
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                if let Err(e) = one(c) {
                    log::debug!("{what} connection: {e}");
                }
            }
            Err(e) => {
                log::warn!("{what} socket accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_one(mut c: UnixStream, fw: &dyn Forwards) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::with_capacity(MAX_REQUEST);
    let mut chunk = [0u8; MAX_REQUEST];
    // Read until the request parses, the client half-closes, or it is too large: a client that
    // never shuts down its side still gets its answer (slirp4netns behaves so since 1.2.0).
    loop {
        let n = match c.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => 0,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.len() >= MAX_REQUEST || serde_json::from_slice::<Value>(&buf).is_ok() {
            break;
        }
    }
    let reply = handle(&buf, fw);
    c.write_all(reply.to_string().as_bytes())?;
    // Let a client finish writing what it meant to send with the request (a newline sent
    // separately) rather than meet a broken pipe; then close.
    c.shutdown(std::net::Shutdown::Write)?;
    c.set_read_timeout(Some(Duration::from_millis(200)))?;
    while matches!(c.read(&mut chunk), Ok(n) if n > 0) {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Fake {
        list: RefCell<Vec<Forward>>,
        fail: bool,
    }

    impl Forwards for Fake {
        fn add(&self, proto: Proto, host: SocketAddr, guest: SocketAddr) -> Result<u64, String> {
            if self.fail {
                return Err("in use".into());
            }
            let id = self.list.borrow().len() as u64 + 1;
            self.list.borrow_mut().push(Forward { id, proto, host, guest });
            Ok(id)
        }
        fn remove(&self, id: u64) -> bool {
            let mut l = self.list.borrow_mut();
            let before = l.len();
            l.retain(|f| f.id != id);
            l.len() != before
        }
        fn list(&self) -> Vec<Forward> {
            self.list.borrow().clone()
        }
        fn guest(&self) -> (Ipv4Addr, ipnet::Ipv4Net) {
            (Ipv4Addr::new(10, 0, 2, 100), "10.0.2.0/24".parse().unwrap())
        }
    }

    fn ask(fw: &Fake, req: &str) -> String {
        handle(req.as_bytes(), fw).to_string()
    }

    #[test]
    fn add_list_remove_as_slirp4netns_answers() {
        let fw = Fake::default();
        let add = r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}}"#;
        assert_eq!(ask(&fw, &format!("{add}\n")), r#"{"return":{"id":1}}"#);
        // Defaults: empty host_addr and missing guest_addr.
        let udp = r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"","host_port":5353,"guest_port":53}}"#;
        assert_eq!(ask(&fw, udp), r#"{"return":{"id":2}}"#);
        let list = handle(br#"{"execute":"list_hostfwd"}"#, &fw);
        assert_eq!(
            list["return"]["entries"][1],
            json!({"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"10.0.2.100","guest_port":53})
        );
        assert_eq!(ask(&fw, r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#), r#"{"return":{}}"#);
        assert_eq!(
            ask(&fw, r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#),
            r#"{"error":{"desc":"bad request: remove_hostfwd: slirp_remove_hostfwd failed"}}"#
        );
        assert_eq!(handle(br#"{"execute":"list_hostfwd"}"#, &fw)["return"]["entries"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn every_error_has_slirp4netns_text() {
        let fw = Fake::default();
        let cases = [
            ("{", "cannot parse JSON"),
            ("", "cannot parse JSON"),
            ("[1]", "json_object() failed"),
            (r#"{"x":1}"#, "no execute found"),
            (r#"{"execute":"reboot"}"#, "unknown execute"),
            (r#"{"execute":"add_hostfwd"}"#, "add_hostfwd: bad arguments.proto"),
            (r#"{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":1,"guest_port":1}}"#, "add_hostfwd: bad arguments.proto"),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":1,"guest_port":1}}"#,
                "add_hostfwd: bad arguments.host_addr",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":0,"guest_port":1}}"#,
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":70000,"guest_port":1}}"#,
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":"80","guest_port":1}}"#,
                "add_hostfwd: bad arguments.host_port",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_addr":"10.0.3.1","guest_port":1}}"#,
                "add_hostfwd: bad arguments.guest_addr",
            ),
            (
                r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_port":-1}}"#,
                "add_hostfwd: bad arguments.guest_port",
            ),
            (r#"{"execute":"remove_hostfwd","arguments":{"id":"1"}}"#, "remove_hostfwd: bad arguments.id"),
            (r#"{"execute":"remove_hostfwd"}"#, "remove_hostfwd: bad arguments.id"),
        ];
        for (req, reason) in cases {
            assert_eq!(handle(req.as_bytes(), &fw), json!({"error":{"desc": format!("bad request: {reason}")}}), "{req}");
        }
        assert!(fw.list().is_empty(), "no error changed anything");
        let big = format!(r#"{{"execute":"list_hostfwd","pad":"{}"}}"#, "x".repeat(MAX_REQUEST));
        assert_eq!(handle(big.as_bytes(), &fw), json!({"error":{"desc":"bad request: too large message"}}));
        let failing = Fake { fail: true, ..Default::default() };
        assert_eq!(
            ask(&failing, r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_port":1}}"#),
            r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#
        );
    }
}
