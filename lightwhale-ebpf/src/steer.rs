//! Steering of new TCP connections for sleeping containers to the holder.
//!
//! An sk_lookup program in the host network namespace runs before the
//! kernel looks up a listening socket for a new connection. When the
//! destination is a published address of a sleeping container, it assigns
//! the holder's listener instead. This works with no listener and no Docker
//! NAT rule left for the port, and it takes precedence over docker-proxy
//! while a container is being checkpointed.

use aya_ebpf::{
    bindings::sk_action::SK_PASS,
    btf_maps::{HashMap, SockMap},
    macros::{btf_map, sk_lookup},
    programs::SkLookupContext,
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

    let exact = ListenKey {
        addr: lookup.local_ip4,
        port: lookup.local_port as u16,
        protocol: PROTOCOL_TCP,
    };
    let any_address = ListenKey { addr: 0, ..exact };
    // SAFETY: only the presence of the key is read, never the value.
    let steered = unsafe { LISTENERS.get(exact).is_some() || LISTENERS.get(any_address).is_some() };
    if steered {
        // On failure (no holder socket yet) the kernel goes on with its
        // usual lookup, which is the best this program can do.
        let _ = HOLDER.redirect_sk_lookup(&ctx, HOLDER_IPV4_INDEX, 0);
    }
    SK_PASS
}
