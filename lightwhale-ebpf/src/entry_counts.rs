//! Entry counts of the maps that are empty while no container sleeps.

use aya_ebpf::{btf_maps::Array, macros::btf_map};
use lightwhale_common::entry_counts::LEN;

/// Number of entries per map, at the indexes of
/// [`lightwhale_common::entry_counts`], written by the daemon after every
/// change of those maps.
#[btf_map]
static ENTRY_COUNTS: Array<u32, { LEN as usize }> = Array::new();

/// Returns whether the map at `index` may have entries. An array lookup is
/// a few instructions once the verifier inlines it, far cheaper than a
/// lookup in a hash map.
#[inline(always)]
pub fn may_have_entries(index: u32) -> bool {
    ENTRY_COUNTS.get(index).is_none_or(|count| *count != 0)
}
