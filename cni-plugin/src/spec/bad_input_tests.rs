//! Bad input (issue 8 §4): every `CNI_*` variable and every configuration field with
//! wrong types, out-of-range values, oversized input, invalid UTF-8, truncated JSON,
//! unsupported versions and duplicate keys. Each case goes through `crate::run`, as the
//! binary does, and must give the spec's code and a message naming the problem.
//!
//! Nothing a case wrongly accepts can touch the machine: the environment cases send a
//! configuration that is itself invalid (a variable wrongly accepted stops there, with
//! code 7 instead of the 4 the case expects), and the configuration cases run STATUS
//! against an agent socket that does not exist.
//!
//! `cargo test -p netkit-cni --lib bad_input -- --nocapture` prints the table.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStringExt as _;

use serde_json::{Value, json};

use crate::error::Error;
use crate::spec::config::{self, MAX_CONFIG_BYTES, NetConf, VALID_ATTACHMENTS};
use crate::spec::env::{ARGS, COMMAND, CONTAINER_ID, IFNAME, NETNS, PATH};
use crate::spec::error::code;
use crate::spec::result::CniResult;

/// An error document has no business being larger than this, whatever the input.
const DOC_MAX: usize = 1024;

/// Invalid on purpose (`mtu`): the safety net under the environment cases.
const ENV_CASE_STDIN: &str = r#"{"cniVersion": "1.1.0", "name": "pods", "mtu": 1}"#;

const ADD: [(&str, &[u8]); 4] = [
    (COMMAND, b"ADD"),
    (CONTAINER_ID, b"c1"),
    (NETNS, b"/run/netns/p1"),
    (IFNAME, b"eth0"),
];

/// What the plugin printed: `(code, msg)`; panics if it succeeded.
fn failure(label: &str, env: &HashMap<&str, OsString>, stdin: &mut dyn Read) -> (u64, String) {
    let out = crate::run(|k| env.get(k).cloned(), stdin);
    let text = out.stdout.unwrap_or_default();
    assert!(!out.success, "{label}: accepted ({text})");
    assert!(
        text.len() < DOC_MAX,
        "{label}: error document of {} bytes",
        text.len()
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    let code = doc["code"].as_u64().unwrap();
    (code, doc["msg"].as_str().unwrap().to_string())
}

fn check(label: &str, (code, msg): (u64, String), want: u32, names: &[&str]) {
    println!("| {label} | {code} | {} |", msg.replace('|', "\\|"));
    assert_eq!(code, u64::from(want), "{label}: {msg}");
    for name in names {
        assert!(
            msg.contains(name),
            "{label}: {msg:?} does not name {name:?}"
        );
    }
}

struct EnvCase {
    label: String,
    var: &'static str,
    /// `None`: unset.
    value: Option<Vec<u8>>,
    names: Vec<&'static str>,
}

fn env_case(var: &'static str, value: Option<&[u8]>, names: &[&'static str]) -> EnvCase {
    let shown = match value {
        None => "unset".to_string(),
        Some(v) if v.len() > 40 => format!("{} bytes", v.len()),
        Some(v) => format!("`{}`", v.escape_ascii()),
    };
    EnvCase {
        label: format!("{var} {shown}"),
        var,
        value: value.map(<[u8]>::to_vec),
        names: names.to_vec(),
    }
}

#[test]
fn every_bad_environment_variable_is_code_4_naming_it() {
    let long = vec![b'a'; 100_000];
    let cases = [
        env_case(COMMAND, None, &[COMMAND]),
        env_case(COMMAND, Some(b"add"), &[COMMAND, "add"]),
        env_case(COMMAND, Some(b"DELETE"), &[COMMAND]),
        env_case(COMMAND, Some(b" ADD"), &[COMMAND]),
        env_case(COMMAND, Some(&long), &[COMMAND, "…"]),
        env_case(COMMAND, Some(b"AD\xffD"), &[COMMAND, "UTF-8"]),
        env_case(CONTAINER_ID, None, &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some(b"-abc"), &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some(b".hidden"), &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some(b"a/b"), &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some(b"../../etc"), &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some(b"a b"), &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some(b"a;b"), &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some("é".as_bytes()), &[CONTAINER_ID]),
        env_case(CONTAINER_ID, Some(b"c1\xff"), &[CONTAINER_ID, "UTF-8"]),
        env_case(NETNS, None, &[NETNS]),
        env_case(NETNS, Some(b"p1"), &[NETNS, "absolute"]),
        env_case(NETNS, Some(b"../netns/p1"), &[NETNS, "absolute"]),
        env_case(NETNS, Some(b"/run/netns/\xff"), &[NETNS, "UTF-8"]),
        env_case(IFNAME, None, &[IFNAME]),
        env_case(IFNAME, Some(b"sixteen-chars-xx"), &[IFNAME, "15 bytes"]),
        env_case(IFNAME, Some("ééééééééé".as_bytes()), &[IFNAME, "15 bytes"]),
        env_case(IFNAME, Some(&long), &[IFNAME, "15 bytes", "…"]),
        env_case(IFNAME, Some(b"."), &[IFNAME, "'.'"]),
        env_case(IFNAME, Some(b".."), &[IFNAME, "'..'"]),
        env_case(IFNAME, Some(b"a/b"), &[IFNAME, "'/'"]),
        env_case(IFNAME, Some(b"eth0:1"), &[IFNAME, "':'"]),
        env_case(IFNAME, Some(b"eth 0"), &[IFNAME, "whitespace"]),
        env_case(IFNAME, Some(b"eth\t0"), &[IFNAME, "whitespace"]),
        env_case(IFNAME, Some(b"eth%d"), &[IFNAME, "'%'"]),
        env_case(IFNAME, Some(b"eth\xff"), &[IFNAME, "UTF-8"]),
        env_case(ARGS, Some(b"FOO"), &[ARGS, "KEY=VALUE"]),
        env_case(ARGS, Some(b"=1"), &[ARGS, "KEY=VALUE"]),
        env_case(ARGS, Some(b"K8S_POD_NAME=a;junk"), &[ARGS, "KEY=VALUE"]),
        env_case(ARGS, Some(b"A=\xff"), &[ARGS, "UTF-8"]),
        env_case(PATH, Some(b"/opt/cni/bin:/\xff"), &[PATH, "UTF-8"]),
    ];
    println!("| environment (ADD) | code | message |\n|---|---|---|");
    for case in cases {
        let mut env: HashMap<&str, OsString> = ADD
            .iter()
            .map(|(k, v)| (*k, OsString::from_vec(v.to_vec())))
            .collect();
        match case.value {
            None => env.remove(case.var),
            Some(v) => env.insert(case.var, OsString::from_vec(v)),
        };
        let out = failure(&case.label, &env, &mut ENV_CASE_STDIN.as_bytes());
        check(&case.label, out, code::INVALID_ENVIRONMENT, &case.names);
    }
}

#[test]
fn good_edge_values_of_the_environment_pass_the_parser() {
    // Accepted, so the safety-net configuration answers (7): the variables passed.
    let cases: [(&str, &[u8]); 5] = [
        (IFNAME, b"fifteen-chars-x"),
        (CONTAINER_ID, &[b'a'; 4096]),
        (ARGS, b"IgnoreUnknown=1;K8S_POD_NAME=a=b;;"),
        (ARGS, b""),
        (PATH, b"relative:/opt/cni/bin"),
    ];
    for (var, value) in cases {
        let mut env: HashMap<&str, OsString> = ADD
            .iter()
            .map(|(k, v)| (*k, OsString::from_vec(v.to_vec())))
            .collect();
        env.insert(var, OsString::from_vec(value.to_vec()));
        let label = format!("{var}={}", value.escape_ascii());
        let (code, msg) = failure(&label, &env, &mut ENV_CASE_STDIN.as_bytes());
        assert_eq!((code, msg.contains("mtu")), (7, true), "{label}: {msg}");
    }
}

/// STATUS against a socket that does not exist: a configuration wrongly accepted ends
/// in code 50, never in a change to the machine.
fn base() -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "pods", "type": "netkit-cni",
        "agentSocket": "/nonexistent/netkit-cni-bad-input/agent.sock",
        "stateDir": "/nonexistent/netkit-cni-bad-input",
    })
}

fn with(key: &str, value: Value) -> Vec<u8> {
    let mut v = base();
    v[key] = value;
    v.to_string().into_bytes()
}

fn without(key: &str) -> Vec<u8> {
    let mut v = base();
    v.as_object_mut().unwrap().remove(key);
    v.to_string().into_bytes()
}

/// The base document with `members` (raw JSON text) added at its end.
fn spliced(members: &str) -> Vec<u8> {
    let text = base().to_string();
    format!("{},{members}}}", &text[..text.len() - 1]).into_bytes()
}

fn status(label: &str, stdin: &mut dyn Read) -> (u64, String) {
    let env = HashMap::from([(COMMAND, OsString::from("STATUS"))]);
    failure(label, &env, stdin)
}

#[test]
fn every_bad_configuration_gets_its_code_and_names_the_field() {
    use code::{DECODING_FAILURE as DEC, INCOMPATIBLE_VERSION as VER, INVALID_CONFIG as INV};
    let huge = "x".repeat(500_000);
    let deep = format!(r#""ipam":{}{}"#, "[".repeat(10_000), "]".repeat(10_000));
    let mut oversized = base().to_string().into_bytes();
    oversized.resize(MAX_CONFIG_BYTES + 1, b' ');
    let cases: Vec<(&str, Vec<u8>, u32, &[&str])> = vec![
        // The document itself.
        ("empty stdin", vec![], DEC, &["EOF"]),
        ("`{`", b"{".to_vec(), DEC, &["EOF"]),
        (
            "truncated in a value",
            br#"{"cniVersion": "1.1.0", "name": "po"#.to_vec(),
            DEC,
            &["name", "EOF"],
        ),
        (
            "truncated in a nested object",
            br#"{"cniVersion": "1.1.0", "name": "pods", "ipam": {"type": "host-local""#.to_vec(),
            DEC,
            &["ipam", "EOF"],
        ),
        (
            "truncated after a member",
            br#"{"cniVersion": "1.1.0", "name": "pods","#.to_vec(),
            DEC,
            &["EOF"],
        ),
        ("an array", b"[]".to_vec(), DEC, &["not a JSON object"]),
        ("null", b"null".to_vec(), DEC, &["not a JSON object"]),
        (
            "a string",
            br#""pods""#.to_vec(),
            DEC,
            &["not a JSON object"],
        ),
        (
            "trailing garbage",
            [base().to_string().as_bytes(), b" x"].concat(),
            DEC,
            &["trailing"],
        ),
        (
            "trailing NUL",
            [base().to_string().as_bytes(), b"\0"].concat(),
            DEC,
            &["trailing"],
        ),
        (
            "byte-order mark",
            [b"\xef\xbb\xbf".as_slice(), base().to_string().as_bytes()].concat(),
            DEC,
            &["expected value"],
        ),
        (
            "invalid UTF-8 in a string",
            spliced("\"mode\":\"ve\u{1}th\"")
                .into_iter()
                .map(|b| if b == 1 { 0xff } else { b })
                .collect(),
            DEC,
            &["UTF-8"],
        ),
        (
            "invalid UTF-8 outside strings",
            [base().to_string().as_bytes(), b"\xc3"].concat(),
            DEC,
            &["UTF-8"],
        ),
        (
            "10 000 nested arrays",
            spliced(&deep),
            DEC,
            &["ipam", "recursion limit"],
        ),
        ("stdin over 1 MiB", oversized, INV, &["stdin", "1048576"]),
        // Duplicate keys, at every depth.
        (
            "`mtu` twice",
            spliced(r#""mtu":1500,"mtu":9000"#),
            DEC,
            &["mtu", "duplicate key"],
        ),
        (
            "`cniVersion` twice",
            spliced(r#""cniVersion":"0.4.0""#),
            DEC,
            &["cniVersion", "duplicate key"],
        ),
        (
            "`ipam.type` twice",
            spliced(r#""ipam":{"type":"host-local","type":"dhcp"}"#),
            DEC,
            &["ipam.type", "duplicate key"],
        ),
        (
            "`prevResult.ips[0].address` twice",
            spliced(r#""prevResult":{"ips":[{"address":"10.0.0.2/24","address":"10.0.0.3/24"}]}"#),
            DEC,
            &["prevResult.ips[0].address", "duplicate key"],
        ),
        // cniVersion.
        (
            "cniVersion 1",
            with("cniVersion", json!(1)),
            DEC,
            &["cniVersion"],
        ),
        (
            "cniVersion [] ",
            with("cniVersion", json!([])),
            DEC,
            &["cniVersion"],
        ),
        (
            "cniVersion absent (0.1.0)",
            without("cniVersion"),
            VER,
            &["0.1.0"],
        ),
        (
            "cniVersion null (0.1.0)",
            with("cniVersion", Value::Null),
            VER,
            &["0.1.0"],
        ),
        (
            "cniVersion 0.3.1",
            with("cniVersion", json!("0.3.1")),
            VER,
            &["0.3.1"],
        ),
        (
            "cniVersion 2.0.0",
            with("cniVersion", json!("2.0.0")),
            VER,
            &["2.0.0"],
        ),
        (
            "cniVersion \"\"",
            with("cniVersion", json!("")),
            VER,
            &["\"\""],
        ),
        (
            "cniVersion \" 1.1.0\"",
            with("cniVersion", json!(" 1.1.0")),
            VER,
            &["\" 1.1.0\""],
        ),
        (
            "cniVersion 500 KB",
            with("cniVersion", json!(huge)),
            VER,
            &["not supported", "…"],
        ),
        (
            "cniVersion 1.0.0 with STATUS",
            with("cniVersion", json!("1.0.0")),
            VER,
            &["STATUS", "1.1.0"],
        ),
        (
            "number 1e400",
            spliced(r#""mtu":1e400"#),
            DEC,
            &["mtu", "out of range"],
        ),
        // name, type.
        ("name absent", without("name"), INV, &["name", "missing"]),
        ("name 5", with("name", json!(5)), INV, &["name", "string"]),
        ("name \"\"", with("name", json!("")), INV, &["name"]),
        ("name -pods", with("name", json!("-pods")), INV, &["name"]),
        ("name a/b", with("name", json!("a/b")), INV, &["name"]),
        (
            "name with NUL",
            with("name", json!("a\u{0}")),
            INV,
            &["name"],
        ),
        ("type 5", with("type", json!(5)), INV, &["type", "string"]),
        ("type {}", with("type", json!({})), INV, &["type", "string"]),
        // mode.
        (
            "mode bridge",
            with("mode", json!("bridge")),
            INV,
            &["mode", "bridge"],
        ),
        ("mode NETKIT", with("mode", json!("NETKIT")), INV, &["mode"]),
        ("mode \"\"", with("mode", json!("")), INV, &["mode"]),
        ("mode 1", with("mode", json!(1)), INV, &["mode", "string"]),
        (
            "mode 500 KB",
            with("mode", json!(huge)),
            INV,
            &["mode", "…"],
        ),
        // mtu.
        (
            "mtu 0",
            with("mtu", json!(0)),
            INV,
            &["mtu", "0 is outside 68..=65535"],
        ),
        (
            "mtu 67",
            with("mtu", json!(67)),
            INV,
            &["mtu", "67 is outside"],
        ),
        (
            "mtu 65536",
            with("mtu", json!(65_536)),
            INV,
            &["mtu", "65536 is outside"],
        ),
        (
            "mtu 70000",
            with("mtu", json!(70_000)),
            INV,
            &["mtu", "70000 is outside"],
        ),
        (
            "mtu 2^32",
            with("mtu", json!(1_u64 << 32)),
            INV,
            &["mtu", "4294967296 is outside"],
        ),
        (
            "mtu -1",
            with("mtu", json!(-1)),
            INV,
            &["mtu", "-1 is outside"],
        ),
        (
            "mtu 2^64",
            spliced(r#""mtu":18446744073709551616"#),
            INV,
            &["mtu", "integer"],
        ),
        (
            "mtu 1500.5",
            with("mtu", json!(1500.5)),
            INV,
            &["mtu", "integer"],
        ),
        (
            "mtu \"1500\"",
            with("mtu", json!("1500")),
            INV,
            &["mtu", "integer"],
        ),
        (
            "mtu true",
            with("mtu", json!(true)),
            INV,
            &["mtu", "integer"],
        ),
        ("mtu []", with("mtu", json!([])), INV, &["mtu", "integer"]),
        // ipam.
        (
            "ipam \"host-local\"",
            with("ipam", json!("host-local")),
            INV,
            &["ipam", "object"],
        ),
        ("ipam []", with("ipam", json!([])), INV, &["ipam", "object"]),
        (
            "ipam {}",
            with("ipam", json!({})),
            INV,
            &["ipam.type", "missing"],
        ),
        (
            "ipam.type 3",
            with("ipam", json!({"type": 3})),
            INV,
            &["ipam.type", "string"],
        ),
        (
            "ipam.type \"\"",
            with("ipam", json!({"type": ""})),
            INV,
            &["ipam.type"],
        ),
        (
            "ipam.type ..",
            with("ipam", json!({"type": ".."})),
            INV,
            &["ipam.type"],
        ),
        (
            "ipam.type ../evil",
            with("ipam", json!({"type": "../evil"})),
            INV,
            &["ipam.type"],
        ),
        (
            "ipam.type /bin/sh",
            with("ipam", json!({"type": "/bin/sh"})),
            INV,
            &["ipam.type"],
        ),
        (
            "ipam.type with NUL",
            with("ipam", json!({"type": "a\u{0}"})),
            INV,
            &["ipam.type"],
        ),
        // Paths.
        (
            "agentSocket relative",
            with("agentSocket", json!("agent.sock")),
            INV,
            &["agentSocket", "absolute"],
        ),
        (
            "agentSocket false",
            with("agentSocket", json!(false)),
            INV,
            &["agentSocket", "string"],
        ),
        (
            "agentSocket 200 bytes",
            with("agentSocket", json!(format!("/{}", "s".repeat(199)))),
            INV,
            &["agentSocket", "unix socket"],
        ),
        (
            "agentSocket with NUL",
            with("agentSocket", json!("/run/a\u{0}.sock")),
            INV,
            &["agentSocket", "NUL"],
        ),
        (
            "logFile relative",
            with("logFile", json!("cni.log")),
            INV,
            &["logFile", "absolute"],
        ),
        (
            "logFile 1",
            with("logFile", json!(1)),
            INV,
            &["logFile", "string"],
        ),
        (
            "logFile with NUL",
            with("logFile", json!("/tmp/a\u{0}")),
            INV,
            &["logFile", "NUL"],
        ),
        (
            "stateDir relative",
            with("stateDir", json!("state")),
            INV,
            &["stateDir", "absolute"],
        ),
        (
            "stateDir {}",
            with("stateDir", json!({})),
            INV,
            &["stateDir", "string"],
        ),
        (
            "stateDir with NUL",
            with("stateDir", json!("/var/\u{0}")),
            INV,
            &["stateDir", "NUL"],
        ),
        // logLevel.
        (
            "logLevel loud",
            with("logLevel", json!("loud")),
            INV,
            &["logLevel", "loud"],
        ),
        (
            "logLevel 3",
            with("logLevel", json!(3)),
            INV,
            &["logLevel", "string"],
        ),
        // bigTcp.
        (
            "bigTcp 1",
            with("bigTcp", json!(1)),
            INV,
            &["bigTcp", "object"],
        ),
        (
            "bigTcp []",
            with("bigTcp", json!([])),
            INV,
            &["bigTcp", "object"],
        ),
        (
            "bigTcp.gsoMaxSize 65535",
            with("bigTcp", json!({"gsoMaxSize": 65_535})),
            INV,
            &["bigTcp.gsoMaxSize", "outside 65536..=524280"],
        ),
        (
            "bigTcp.groMaxSize 524281",
            with("bigTcp", json!({"groMaxSize": 524_281})),
            INV,
            &["bigTcp.groMaxSize", "outside"],
        ),
        (
            "bigTcp.gsoIpv4MaxSize \"big\"",
            with("bigTcp", json!({"gsoIpv4MaxSize": "big"})),
            INV,
            &["bigTcp.gsoIpv4MaxSize", "integer"],
        ),
        (
            "bigTcp.groIpv4MaxSize -65536",
            with("bigTcp", json!({"groIpv4MaxSize": -65_536})),
            INV,
            &["bigTcp.groIpv4MaxSize", "outside"],
        ),
        (
            "bigTcp.groIpv4MaxSize 1.5",
            with("bigTcp", json!({"groIpv4MaxSize": 1.5})),
            INV,
            &["bigTcp.groIpv4MaxSize", "integer"],
        ),
        // dns.
        (
            "dns \"x\"",
            with("dns", json!("x")),
            INV,
            &["dns", "object"],
        ),
        (
            "dns.nameservers \"10.0.0.1\"",
            with("dns", json!({"nameservers": "10.0.0.1"})),
            INV,
            &["dns.nameservers", "array"],
        ),
        (
            "dns.nameservers [1]",
            with("dns", json!({"nameservers": [1]})),
            INV,
            &["dns.nameservers[0]", "string"],
        ),
        (
            "dns.domain 1",
            with("dns", json!({"domain": 1})),
            INV,
            &["dns.domain", "string"],
        ),
        (
            "dns.search {}",
            with("dns", json!({"search": {}})),
            INV,
            &["dns.search", "array"],
        ),
        (
            "dns.options [\"a\", null]",
            with("dns", json!({"options": ["a", null]})),
            INV,
            &["dns.options[1]", "string"],
        ),
        // GC's valid attachments.
        (
            "valid-attachments {}",
            with(VALID_ATTACHMENTS, json!({})),
            INV,
            &[VALID_ATTACHMENTS, "array"],
        ),
        (
            "valid-attachments [1]",
            with(VALID_ATTACHMENTS, json!([1])),
            INV,
            &["valid-attachments[0]", "object"],
        ),
        (
            "valid-attachments containerID 1",
            with(
                VALID_ATTACHMENTS,
                json!([{"containerID": 1, "ifname": "eth0"}]),
            ),
            INV,
            &["valid-attachments[0].containerID", "string"],
        ),
        (
            "valid-attachments no ifname",
            with(VALID_ATTACHMENTS, json!([{"containerID": "c1"}])),
            INV,
            &["valid-attachments[0].ifname", "missing"],
        ),
    ];
    println!("| configuration (STATUS) | code | message |\n|---|---|---|");
    for (label, stdin, want, names) in cases {
        let out = status(label, &mut stdin.as_slice());
        check(label, out, want, names);
    }
}

/// A runtime that never stops writing: the plugin reads one byte past the limit, then
/// answers.
#[test]
fn endless_stdin_is_read_only_to_the_limit() {
    struct Counting(u64);
    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            buf.fill(b' ');
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
    }
    let mut stdin = Counting(0);
    let out = status("endless stdin", &mut stdin);
    check("endless stdin", out, code::INVALID_CONFIG, &["stdin"]);
    assert_eq!(stdin.0, MAX_CONFIG_BYTES as u64 + 1);
}

#[test]
fn good_edge_values_of_the_configuration_parse() {
    let mut exactly_max = base().to_string().into_bytes();
    exactly_max.resize(MAX_CONFIG_BYTES, b' ');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("exactly 1 MiB", exactly_max),
        ("mtu 68", with("mtu", json!(68))),
        ("mtu 65535", with("mtu", json!(65_535))),
        (
            "keys differing in case",
            spliced(r#""mtu":1500,"MTU":9000"#),
        ),
        (
            "duplicates in different objects",
            spliced(r#""ipam":{"type":"x","args":{"type":"y"}}"#),
        ),
        ("logLevel WARNING", with("logLevel", json!("WARNING"))),
        (
            "nulls mean absent",
            with("dns", json!({"nameservers": null})),
        ),
        (
            "agentSocket 107 bytes",
            with("agentSocket", json!(format!("/{}", "s".repeat(106)))),
        ),
        ("name of 500 KB", with("name", json!("n".repeat(500_000)))),
        ("unknown keys", with("someFutureKey", json!({"a": [1, 2]}))),
        ("type absent", without("type")),
    ];
    for (label, stdin) in cases {
        let parsed = NetConf::parse(&stdin);
        assert!(parsed.is_ok(), "{label}: {parsed:?}");
    }
}

/// `prevResult` is decoded when ADD chains or CHECK compares (DEL must not fail on it),
/// so its errors are the result decoder's: code 6, naming the element.
#[test]
fn bad_prev_results_are_code_6_naming_the_element() {
    let cases: [(&str, Value, &[&str]); 10] = [
        ("prevResult 5", json!(5), &["prevResult", "object"]),
        ("prevResult []", json!([]), &["prevResult", "object"]),
        (
            "prevResult.ips \"x\"",
            json!({"ips": "x"}),
            &["prevResult.ips", "array"],
        ),
        (
            "prevResult.ips [5]",
            json!({"ips": [5]}),
            &["prevResult.ips[0]"],
        ),
        (
            "prevResult.ips[0] {}",
            json!({"ips": [{}]}),
            &["prevResult.ips[0]", "address"],
        ),
        (
            "prevResult.ips[0].address bogus",
            json!({"ips": [{"address": "bogus"}]}),
            &["prevResult.ips[0].address", "bogus"],
        ),
        (
            "prevResult.ips[0].gateway 10.0.0.300",
            json!({"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.300"}]}),
            &["prevResult.ips[0].gateway"],
        ),
        (
            "prevResult.routes[0].dst /33",
            json!({"routes": [{"dst": "10.0.0.0/33"}]}),
            &["prevResult.routes[0].dst"],
        ),
        (
            "prevResult.interfaces[0].mtu -1",
            json!({"interfaces": [{"name": "eth0", "mtu": -1}]}),
            &["prevResult.interfaces[0]"],
        ),
        (
            "prevResult.dns.search 1",
            json!({"dns": {"search": 1}}),
            &["prevResult.dns"],
        ),
    ];
    println!("| prevResult (ADD, CHECK) | code | message |\n|---|---|---|");
    for (label, prev, names) in cases {
        // The configuration carrying it parses: DEL and GC never look at it.
        let conf = NetConf::parse(&with("prevResult", prev.clone())).unwrap();
        let e: Error = CniResult::from_value(conf.prev_result.as_ref().unwrap(), "prevResult")
            .unwrap_err()
            .into();
        let doc = e.to_cni();
        check(
            label,
            (u64::from(doc.code), doc.msg),
            code::DECODING_FAILURE,
            names,
        );
    }
}

#[test]
fn the_requested_version_of_a_bad_document_is_not_guessed() {
    // Duplicate `cniVersion`: the error answers in the latest version, not in either.
    let stdin = spliced(r#""cniVersion":"0.4.0""#);
    assert_eq!(config::requested_version(&stdin), None);
}
