//! `vswitchctl port NAME [PORT[/PROTO]]`: a container's published ports, as `docker port` prints them.

use clap::Args;

use super::{print_json, seg, Ctx};
use crate::client::ClientError;

#[derive(Debug, Args)]
pub(super) struct PortCmd {
    /// The container: an endpoint's --name, or the sandbox's name.
    name: String,
    /// Only this container port: PORT or PORT/PROTO.
    port: Option<String>,
}

impl PortCmd {
    pub(super) fn exec(self, ctx: &Ctx) -> Result<(), ClientError> {
        let v = ctx.call("GET", &format!("/ports?container={}", seg(&self.name)), None)?;
        let want = self.port.as_deref().map(|p| if p.contains('/') { p.to_string() } else { format!("{p}/tcp") });
        let rows: Vec<&serde_json::Value> =
            v.as_array().into_iter().flatten().filter(|r| want.as_deref().is_none_or(|w| r["ContainerPort"] == w)).collect();
        if let (Some(w), true) = (&want, rows.is_empty()) {
            return Err(ClientError::Daemon(format!("no public port '{w}' published for {}", self.name)));
        }
        if ctx.json() {
            print_json(&serde_json::Value::Array(rows.into_iter().cloned().collect()));
            return Ok(());
        }
        for r in rows {
            // docker port prints only the host side when asked about one port.
            let line = r["Line"].as_str().unwrap_or_default();
            match &want {
                Some(_) => println!("{}", line.split(" -> ").nth(1).unwrap_or(line)),
                None => println!("{line}"),
            }
        }
        Ok(())
    }
}
