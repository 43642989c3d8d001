//! Steering of new TCP connections for sleeping containers to the holder.
//!
//! An sk_lookup program in the host network namespace runs before the
//! kernel looks up a listening socket for a new connection. When the
//! destination is a published address of a sleeping container, it assigns
//! the holder's listener instead. This works with no listener and no Docker
//! NAT rule left for the port, and it takes precedence over docker-proxy
//! while a container is being checkpointed.
//!
//! Docker's destination NAT rules translate a connection to a published
//! port before that lookup, towards a container that is being checkpointed
//! or restored and cannot accept it yet. A socket filter, run by an
//! iptables rule at the top of the nat table, selects the connections that
//! must stay untranslated so that they reach the lookup.

use aya_ebpf::{
    bindings::sk_action::SK_PASS,
    btf_maps::{HashMap, SockMap},
    macros::{btf_map, sk_lookup, socket_filter},
    programs::{SkBuffContext, SkLookupContext},
};
use lightwhale_common::{entry_counts, ListenKey, HOLDER_IPV4_INDEX, MAX_LISTENERS, PROTOCOL_TCP};

use crate::entry_counts::may_have_entries;

/// Published addresses of sleeping containers, valued by container slot.
/// The daemon inserts the entries of a container before it checkpoints it,
/// and removes them once the restored container accepts connections.
#[btf_map]
static LISTENERS: HashMap<ListenKey, u32, { MAX_LISTENERS as usize }> = HashMap::new();

/// The holder's listening sockets, written by the daemon at start.
#[btf_map]
static HOLDER: SockMap<1> = SockMap::new();

const AF_INET: u32 = 2;
/// Offsets within an IPv4 header of the version/IHL byte, the protocol and
/// the destination address, and of the destination port within TCP's.
const IPV4_IHL_OFFSET: usize = 0;
const IPV4_PROTOCOL_OFFSET: usize = 9;
const IPV4_DESTINATION_OFFSET: usize = 16;
const TCP_DESTINATION_PORT_OFFSET: usize = 2;

#[sk_lookup]
pub fn lw_steer(ctx: SkLookupContext) -> u32 {
    // SAFETY: `lookup` points at the context the kernel passed to this program.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.family != AF_INET || lookup.protocol != u32::from(PROTOCOL_TCP) {
        return SK_PASS;
    }
    // Runs for every new connection on the host while nothing is held.
    if !may_have_entries(entry_counts::LISTENERS) {
        return SK_PASS;
    }

    if is_held(lookup.local_ip4, lookup.local_port as u16) {
        // On failure (no holder socket yet) the kernel goes on with its
        // usual lookup, which is the best this program can do.
        let _ = HOLDER.redirect_sk_lookup(&ctx, HOLDER_IPV4_INDEX, 0);
    }
    SK_PASS
}

/// Matches the first packet of a TCP connection to a held published
/// address, for the iptables rule that keeps Docker's NAT away from it. The
/// packet starts at its IPv4 header. Returns 1 for a match, 0 otherwise.
#[socket_filter]
pub fn lw_nat_bypass(ctx: SkBuffContext) -> i64 {
    // Runs for every new connection through the nat table.
    if !may_have_entries(entry_counts::LISTENERS) {
        return 0;
    }
    let Ok(protocol) = ctx.load::<u8>(IPV4_PROTOCOL_OFFSET) else {
        return 0;
    };
    if u16::from(protocol) != PROTOCOL_TCP {
        return 0;
    }
    let Ok(version_ihl) = ctx.load::<u8>(IPV4_IHL_OFFSET) else {
        return 0;
    };
    let header_length = usize::from(version_ihl & 0x0f) * 4;
    let (Ok(destination), Ok(port)) = (
        ctx.load::<u32>(IPV4_DESTINATION_OFFSET),
        ctx.load::<u16>(header_length + TCP_DESTINATION_PORT_OFFSET),
    ) else {
        return 0;
    };
    i64::from(is_held(destination, u16::from_be(port)))
}

/// Returns whether `address` (network byte order) and `port` are held,
/// exactly or on every address.
#[inline(always)]
fn is_held(address: u32, port: u16) -> bool {
    let exact = ListenKey { addr: address, port, protocol: PROTOCOL_TCP };
    let any_address = ListenKey { addr: 0, ..exact };
    // SAFETY: only the presence of the key is read, never the value.
    unsafe { LISTENERS.get(exact).is_some() || LISTENERS.get(any_address).is_some() }
}
