//! Feeds arbitrary label sets to the label parser, which must not panic,
//! and checks that every accepted policy has timeouts of at least 1 s.
#![no_main]

use std::{collections::HashMap, time::Duration};

use libfuzzer_sys::fuzz_target;
use lightwhale::labels::{management, Defaults, Management};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // One label per line, `key=value`.
    let labels: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    for manage_all in [false, true] {
        let defaults = Defaults { manage_all, idle_timeout: Duration::from_secs(600) };
        if let Management::Managed(policy) = management(&labels, &defaults) {
            assert!(policy.idle_timeout >= Duration::from_secs(1));
            assert!(policy.wake_timeout >= Duration::from_secs(1));
        }
    }
});
