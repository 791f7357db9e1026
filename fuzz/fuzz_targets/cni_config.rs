//! The plugin's whole input as a runtime gives it: the six `CNI_*` variables (any
//! bytes, or unset) and stdin (any bytes), through the parsers `netkit_cni::run` uses
//! before it touches the machine. Parsing must not panic, every refusal must be an
//! error document of bounded size, and whatever is accepted must be in range.
//!
//! Input layout (so that plain JSON seeds stay readable): byte 0 picks CNI_COMMAND
//! (`% 8`: ADD, DEL, CHECK, STATUS, GC, VERSION, raw bytes, unset); bytes 1–2 hold two
//! bits per other variable (CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH:
//! 0 unset, 1 and 3 a good value, 2 raw bytes); each raw value is a length byte and
//! that many bytes; the rest is stdin.

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;

use libfuzzer_sys::fuzz_target;
use netkit_cni::error::Error;
use netkit_cni::spec::config::{self, BIG_TCP_RANGE, MTU_RANGE, NetConf, SOCKET_PATH_MAX};
use netkit_cni::spec::env::{self, Command, Invocation};
use netkit_cni::spec::result::CniResult;
use netkit_cni::spec::version;

const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];
const VARS: [(&str, &str); 5] = [
    (env::CONTAINER_ID, "c1"),
    (env::NETNS, "/run/netns/p1"),
    (env::IFNAME, "eth0"),
    (env::ARGS, "IgnoreUnknown=1;K8S_POD_NAME=p"),
    (env::PATH, "/opt/cni/bin"),
];
/// No error message may grow with the input.
const MSG_MAX: usize = 1024;

fn take(rest: &mut &[u8]) -> Vec<u8> {
    let Some((&n, tail)) = rest.split_first() else {
        return Vec::new();
    };
    let (value, tail) = tail.split_at(usize::from(n).min(tail.len()));
    *rest = tail;
    value.to_vec()
}

fn in_range(n: Option<u32>, (min, max): (u32, u32)) -> bool {
    n.is_none_or(|n| (min..=max).contains(&n))
}

fuzz_target!(|data: &[u8]| {
    let Some((&[command, lo, hi], mut rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let mut env_vars: Vec<(&str, OsString)> = Vec::new();
    match command % 8 {
        6 => env_vars.push((env::COMMAND, OsString::from_vec(take(&mut rest)))),
        7 => {}
        n => env_vars.push((env::COMMAND, COMMANDS[usize::from(n)].into())),
    }
    let modes = u16::from_le_bytes([lo, hi]);
    for (i, (name, good)) in VARS.iter().enumerate() {
        match (modes >> (2 * i)) & 3 {
            0 => {}
            2 => env_vars.push((name, OsString::from_vec(take(&mut rest)))),
            _ => env_vars.push((name, (*good).into())),
        }
    }
    let stdin = rest;

    let inv = Invocation::from_env(|name| {
        env_vars
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    });
    match &inv {
        Ok(inv) => {
            if matches!(inv.command, Command::Add | Command::Check | Command::Del) {
                assert!(env::validate_container_id(&inv.container_id).is_ok());
                assert!(env::validate_ifname(&inv.ifname).is_ok());
                assert!(env::validate_args(&inv.args).is_ok());
            }
            if matches!(inv.command, Command::Add | Command::Check) {
                assert!(inv.netns.as_ref().is_some_and(|p| p.is_absolute()));
            }
        }
        Err(e) => {
            let doc = Error::from(e.clone()).to_cni();
            assert!(
                doc.msg.len() <= MSG_MAX,
                "{} bytes: {}",
                doc.msg.len(),
                doc.msg
            );
        }
    }

    // Read as `run` reads it, bounded.
    let mut input = Vec::new();
    let mut reader = stdin;
    let _ = config::read_config(&mut reader, &mut input);
    let requested = config::requested_version(&input);
    let _ = netkit_cni::cmd::version_document(requested.as_deref());
    match NetConf::parse(&input) {
        Ok(conf) => {
            assert!(in_range(conf.mtu, MTU_RANGE));
            let b = conf.big_tcp;
            for size in [
                b.gso_max_size,
                b.gro_max_size,
                b.gso_ipv4_max_size,
                b.gro_ipv4_max_size,
            ] {
                assert!(in_range(size, BIG_TCP_RANGE));
            }
            assert!(env::is_cni_name(&conf.name));
            assert!(conf.agent_socket.is_absolute());
            assert!(conf.agent_socket.as_os_str().len() <= SOCKET_PATH_MAX);
            assert!(conf.state_dir.is_absolute());
            assert!(conf.log_file.as_ref().is_none_or(|p| p.is_absolute()));
            if let Some(ipam) = &conf.ipam {
                assert!(!ipam.plugin.is_empty() && !ipam.plugin.contains('/'));
            }
            if let Ok(inv) = &inv {
                let _ = version::require(inv.command, conf.cni_version);
            }
            // What ADD (chaining) and CHECK do with prevResult.
            if let Some(prev) = &conf.prev_result {
                match CniResult::from_value(prev, "prevResult") {
                    Ok(result) => {
                        let _ = result.to_value(conf.cni_version);
                    }
                    Err(e) => {
                        let _ = Error::from(e).to_cni();
                    }
                }
            }
        }
        Err(e) => {
            let doc = Error::from(e).to_cni();
            assert!(
                doc.msg.len() <= MSG_MAX,
                "{} bytes: {}",
                doc.msg.len(),
                doc.msg
            );
            let _ = doc.to_json(requested.as_deref().unwrap_or("1.1.0"));
        }
    }
});
