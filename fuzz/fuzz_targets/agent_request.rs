//! The agent socket protocol (`netkit_api`): what the agent makes of a request line
//! (`agent/src/server.rs::read_request`: up to the first newline, decoded as a
//! `Request`) and what the plugin and the CLI make of a reply line (`Response`). Decoding
//! must not panic, and whatever decodes must survive a round trip unchanged, so that
//! what the agent acts on is what the client meant.

#![no_main]

use libfuzzer_sys::fuzz_target;
use netkit_api::{Request, Response};

fn first_line(data: &[u8]) -> &[u8] {
    match data.iter().position(|&b| b == b'\n') {
        Some(end) => &data[..=end],
        None => data,
    }
}

fuzz_target!(|data: &[u8]| {
    let line = first_line(data);
    if let Ok(request) = serde_json::from_slice::<Request>(line) {
        let text = serde_json::to_string(&request).expect("a request serialises");
        let again: Request = serde_json::from_str(&text).expect("a request reads back");
        assert_eq!(again, request);
        // Addresses a delegated IPAM plugin handed the plugin, as the agent reads them.
        if let Request::AddEndpoint(add) = &request {
            for ip in &add.ips {
                let _ = netkit_api::parse_cidr(&ip.address);
            }
        }
    }
    if let Ok(response) = serde_json::from_slice::<Response>(line) {
        let text = serde_json::to_string(&response).expect("a response serialises");
        let again: Response = serde_json::from_str(&text).expect("a response reads back");
        assert_eq!(again, response);
    }
});
