//! Plugs the router into the switch: [`L3`] routes on the workers through the switch's
//! `L3Handler`, and learns neighbours from what the slow path sees.

use vswitch_switch::{L3Handler, L3Verdict, NetId};

use crate::forward::{Forward, L3};

impl L3Handler for L3 {
    fn route(&self, in_net: NetId, wire: &mut [u8], scratch: &mut [u8], now: u32) -> L3Verdict {
        match self.forward(in_net, wire, scratch, now) {
            Forward::Out { net, dst_mac } => L3Verdict::Out { net, dst_mac },
            Forward::Icmp { len, .. } => L3Verdict::Reply { len },
            Forward::Resolve { net, ip } => match self.resolve_request(net, ip, scratch) {
                Some(len) => L3Verdict::Resolve { net, len },
                None => L3Verdict::Unresolved,
            },
            Forward::Local => L3Verdict::Local,
            Forward::Uplink => L3Verdict::Uplink,
            Forward::Drop(reason) => L3Verdict::Drop { reason: reason.name() },
        }
    }
}
