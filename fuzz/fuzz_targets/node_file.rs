//! The static node file (YAML or JSON) the agent reads when standalone, through the
//! agent's own parser and route derivation. The agent is a binary crate with no library
//! target, so its `nodes` module (which needs nothing else of the agent) is compiled in
//! from its source; if that module ever reaches into the rest of the agent, this target
//! stops building and says so.
//!
//! Parsing must not panic, and an accepted list must hold what `check` promises.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "../../agent/src/nodes/mod.rs"]
#[allow(dead_code)]
mod nodes;

fuzz_target!(|data: &[u8]| {
    // `file::load` refuses non-UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(list) = nodes::file::parse(Path::new("nodes.yaml"), text) else {
        return;
    };
    assert!(list.check().is_ok());
    for node in &list.nodes {
        assert!(!node.name.is_empty());
        let (routes, _unroutable) = nodes::remote_routes(&list, &node.name);
        assert!(routes.iter().all(|r| r.node != node.name));
        assert!(routes.iter().all(|r| r.cidr.is_ipv4() == r.via.is_ipv4()));
    }
});
