//! The network configuration on stdin: the spec's keys plus this plugin's own.
//!
//! Plugin keys (all optional; unknown keys are ignored, as the spec allows):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `mode` | `auto` | `auto` (netkit if the kernel has it, else veth), `netkit`, `veth` |
//! | `mtu` | MTU of the default-route device, else 1500 | MTU of both ends, 68–65535 |
//! | `ipam` | absent: built-in (the agent allocates) | `{"type": ...}`: delegated IPAM plugin |
//! | `agentSocket` | `netkit_api::DEFAULT_SOCKET` | the agent's unix socket |
//! | `logFile` | none (no log) | file the plugin appends its log to |
//! | `logLevel` | `info` | `error`, `warn`, `info`, `debug`, `trace` |
//! | `bigTcp` | kernel defaults | `{gsoMaxSize, groMaxSize, gsoIpv4MaxSize, groIpv4MaxSize}`, each 65536–524280 |
//! | `stateDir` | `/var/lib/netkit-cni` | plugin state: the deletion queue, the netkit probe cache |
//! | `dns` | none | copied into the result |
//!
//! Stdin must be one JSON object of at most [`MAX_CONFIG_BYTES`], in UTF-8, with no key
//! twice in any object: serde_json would keep the last of two silently, and a
//! configuration that says two things is refused rather than guessed at.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use netkit_api::EndpointId;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::spec::env::is_cni_name;
use crate::spec::error::excerpt;
use crate::spec::result::Dns;
use crate::spec::version::{self, Version, VersionError};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/netkit-cni";
/// The largest configuration read from stdin. A conflist entry with a `prevResult` of a
/// few dozen interfaces is a few KiB; anything near this is not a configuration.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// `sun_path` holds 108 bytes including the terminating NUL.
pub const SOCKET_PATH_MAX: usize = 107;
pub const MTU_RANGE: (u32, u32) = (68, 65_535);
/// BIG TCP sizes: at least the legacy 64 KiB, at most the kernel's GSO/GRO ceiling
/// (`tso_max_size` of veth and netkit).
pub const BIG_TCP_RANGE: (u32, u32) = (65_536, 524_280);
/// The GC key; libcni also sends the name an early draft of the spec used.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
pub const VALID_ATTACHMENTS_OLD: &str = "cni.dev/attachments";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// netkit when the kernel can create it, else veth.
    #[default]
    Auto,
    Netkit,
    Veth,
}

/// BIG TCP: `IFLA_GSO_MAX_SIZE`, `IFLA_GRO_MAX_SIZE` and their IPv4 variants, set on
/// both ends of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BigTcp {
    pub gso_max_size: Option<u32>,
    pub gro_max_size: Option<u32>,
    pub gso_ipv4_max_size: Option<u32>,
    pub gro_ipv4_max_size: Option<u32>,
}

/// Delegated IPAM: the plugin named by `ipam.type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    pub plugin: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: Version,
    pub name: String,
    pub mode: Mode,
    pub mtu: Option<u32>,
    /// `None`: built-in IPAM (the agent allocates).
    pub ipam: Option<IpamConf>,
    pub agent_socket: PathBuf,
    pub log_file: Option<PathBuf>,
    pub log_level: LogLevel,
    pub big_tcp: BigTcp,
    pub state_dir: PathBuf,
    pub dns: Dns,
    /// Decoded when used (ADD chaining, CHECK).
    pub prev_result: Option<Value>,
    /// GC only: the attachments to keep.
    pub valid_attachments: Option<Vec<EndpointId>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot decode the network configuration: {0}")]
    Decode(String),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("invalid network configuration: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Read stdin into `into`, stopping one byte past [`MAX_CONFIG_BYTES`] so that
/// [`NetConf::parse`] can refuse an oversized configuration without holding all of it.
pub fn read_config(stdin: &mut dyn Read, into: &mut Vec<u8>) -> std::io::Result<usize> {
    let limit = u64::try_from(MAX_CONFIG_BYTES).map_or(u64::MAX, |max| max + 1);
    stdin.take(limit).read_to_end(into)
}

/// The `cniVersion` a document asks for, whatever else is wrong with it (for the
/// `cniVersion` of an error document).
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<Peek>(stdin).ok()?.cni_version
}

/// Typed access to one JSON object's keys; `null` counts as absent. `prefix` names the
/// object in errors (`bigTcp.`).
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl Keys<'_> {
    fn field(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(
                &self.field(key),
                format!("must be a string, not {}", shown(other)),
            )),
        }
    }

    /// An array of strings; the error names the element (`dns.search[2]`).
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let items = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(invalid(
                    &self.field(key),
                    format!("must be an array of strings, not {}", shown(other)),
                ));
            }
        };
        items
            .iter()
            .enumerate()
            .map(|(n, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(invalid(
                    &format!("{}[{n}]", self.field(key)),
                    format!("must be a string, not {}", shown(other)),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn u32_in(&self, key: &str, (min, max): (u32, u32)) -> Result<Option<u32>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let out_of_range = |n: &dyn fmt::Display| {
            invalid(&self.field(key), format!("{n} is outside {min}..={max}"))
        };
        let n = match (v.as_u64(), v.as_i64()) {
            (Some(n), _) => n,
            (None, Some(negative)) => return Err(out_of_range(&negative)),
            (None, None) => {
                return Err(invalid(
                    &self.field(key),
                    format!("must be an integer, not {}", shown(v)),
                ));
            }
        };
        match u32::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(out_of_range(&n)),
        }
    }

    fn absolute_path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) if !s.starts_with('/') => Err(invalid(
                &self.field(key),
                format!("{:?} is not an absolute path", excerpt(&s)),
            )),
            Some(s) if s.contains('\0') => Err(invalid(
                &self.field(key),
                format!("{:?} contains a NUL byte", excerpt(&s)),
            )),
            Some(s) => Ok(Some(PathBuf::from(s))),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&Map<String, Value>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(invalid(
                &self.field(key),
                format!("must be an object, not {}", shown(other)),
            )),
        }
    }
}

impl NetConf {
    /// Decode and validate stdin: undecodable → `Decode`, unsupported `cniVersion` →
    /// `Version`, any bad plugin value → `Invalid` naming the field.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, ConfigError> {
        let obj = match decode(stdin)? {
            Value::Object(obj) => obj,
            other => {
                return Err(ConfigError::Decode(format!(
                    "not a JSON object but {}",
                    shown(&other)
                )));
            }
        };
        let keys = Keys {
            obj: &obj,
            prefix: "",
        };
        let cni_version = match keys.get("cniVersion") {
            None => version::negotiate(None)?,
            Some(Value::String(s)) => version::negotiate(Some(s))?,
            Some(other) => {
                return Err(ConfigError::Decode(format!(
                    "cniVersion must be a string, not {}",
                    shown(other)
                )));
            }
        };

        let name = keys
            .string("name")?
            .ok_or_else(|| invalid("name", "missing"))?;
        if !is_cni_name(&name) {
            return Err(invalid(
                "name",
                format!(
                    "{:?} must start with a letter or digit followed by letters, digits, '_', '.' or '-'",
                    excerpt(&name)
                ),
            ));
        }
        // Read by the runtime to find us, not by us; but a `type` that is not a string
        // is not a configuration the runtime can have meant.
        keys.string("type")?;
        let mode = match keys.string("mode")?.as_deref() {
            None | Some("auto") => Mode::Auto,
            Some("netkit") => Mode::Netkit,
            Some("veth") => Mode::Veth,
            Some(other) => {
                return Err(invalid(
                    "mode",
                    format!("{:?} is not auto, netkit or veth", excerpt(other)),
                ));
            }
        };
        let mtu = keys.u32_in("mtu", MTU_RANGE)?;
        let ipam = match keys.object("ipam")? {
            None => None,
            Some(ipam) => Some(parse_ipam(ipam)?),
        };
        let agent_socket = keys
            .absolute_path("agentSocket")?
            .unwrap_or_else(|| PathBuf::from(netkit_api::DEFAULT_SOCKET));
        // Too long for a unix socket address: connect() would fail on every call, and
        // that must not read as "agent unreachable, try again later".
        let socket_len = agent_socket.as_os_str().len();
        if socket_len > SOCKET_PATH_MAX {
            return Err(invalid(
                "agentSocket",
                format!(
                    "{socket_len} bytes is longer than a unix socket path can be ({SOCKET_PATH_MAX})"
                ),
            ));
        }
        let log_file = keys.absolute_path("logFile")?;
        let log_level = match keys
            .string("logLevel")?
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("info") => LogLevel::Info,
            Some("error") => LogLevel::Error,
            Some("warn") | Some("warning") => LogLevel::Warn,
            Some("debug") => LogLevel::Debug,
            Some("trace") => LogLevel::Trace,
            Some(other) => {
                return Err(invalid(
                    "logLevel",
                    format!(
                        "{:?} is not error, warn, info, debug or trace",
                        excerpt(other)
                    ),
                ));
            }
        };
        let big_tcp = match keys.object("bigTcp")? {
            None => BigTcp::default(),
            Some(obj) => {
                let k = Keys {
                    obj,
                    prefix: "bigTcp.",
                };
                BigTcp {
                    gso_max_size: k.u32_in("gsoMaxSize", BIG_TCP_RANGE)?,
                    gro_max_size: k.u32_in("groMaxSize", BIG_TCP_RANGE)?,
                    gso_ipv4_max_size: k.u32_in("gsoIpv4MaxSize", BIG_TCP_RANGE)?,
                    gro_ipv4_max_size: k.u32_in("groIpv4MaxSize", BIG_TCP_RANGE)?,
                }
            }
        };
        let state_dir = keys
            .absolute_path("stateDir")?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let dns = match keys.object("dns")? {
            None => Dns::default(),
            Some(obj) => {
                let k = Keys {
                    obj,
                    prefix: "dns.",
                };
                Dns {
                    nameservers: k.strings("nameservers")?.unwrap_or_default(),
                    domain: k.string("domain")?,
                    search: k.strings("search")?.unwrap_or_default(),
                    options: k.strings("options")?.unwrap_or_default(),
                }
            }
        };
        let prev_result = keys.get("prevResult").cloned();
        let valid_attachments = match keys
            .get(VALID_ATTACHMENTS)
            .map(|v| (VALID_ATTACHMENTS, v))
            .or_else(|| {
                keys.get(VALID_ATTACHMENTS_OLD)
                    .map(|v| (VALID_ATTACHMENTS_OLD, v))
            }) {
            None => None,
            Some((key, v)) => Some(parse_attachments(key, v)?),
        };

        Ok(NetConf {
            cni_version,
            name,
            mode,
            mtu,
            ipam,
            agent_socket,
            log_file,
            log_level,
            big_tcp,
            state_dir,
            dns,
            prev_result,
            valid_attachments,
        })
    }
}

fn parse_ipam(ipam: &Map<String, Value>) -> Result<IpamConf, ConfigError> {
    let keys = Keys {
        obj: ipam,
        prefix: "ipam.",
    };
    let plugin = keys.string("type")?.ok_or_else(|| {
        invalid(
            "ipam.type",
            "missing (leave out the whole `ipam` section for built-in IPAM)",
        )
    })?;
    if plugin.is_empty() || plugin.contains(['/', '\\', '\0']) || plugin == "." || plugin == ".." {
        return Err(invalid(
            "ipam.type",
            format!("{:?} is not a plugin file name", excerpt(&plugin)),
        ));
    }
    Ok(IpamConf { plugin })
}

fn parse_attachments(key: &str, v: &Value) -> Result<Vec<EndpointId>, ConfigError> {
    let items = v
        .as_array()
        .ok_or_else(|| invalid(key, format!("must be an array, not {}", shown(v))))?;
    items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            let field = format!("{key}[{n}]");
            let obj = item
                .as_object()
                .ok_or_else(|| invalid(&field, "must be an object"))?;
            let keys = Keys { obj, prefix: "" };
            let get = |k: &str| {
                keys.string(k)
                    .map_err(|_| invalid(&format!("{field}.{k}"), "must be a string"))?
                    .ok_or_else(|| invalid(&format!("{field}.{k}"), "missing"))
            };
            Ok(EndpointId {
                container_id: get("containerID")?,
                ifname: get("ifname")?,
            })
        })
        .collect()
}

/// A value for an error message: its JSON, cut to an excerpt.
fn shown(v: &Value) -> String {
    excerpt(&v.to_string()).into_owned()
}

/// Decode stdin into a JSON value as `serde_json::from_slice` would, but refuse input
/// over [`MAX_CONFIG_BYTES`], input that is not UTF-8 and objects with a key twice, and
/// name the key under which decoding failed (`ipam.type: duplicate key at line 1 …`).
fn decode(stdin: &[u8]) -> Result<Value, ConfigError> {
    if stdin.len() > MAX_CONFIG_BYTES {
        return Err(invalid(
            "stdin",
            format!("the configuration is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    if let Err(e) = std::str::from_utf8(stdin) {
        return Err(ConfigError::Decode(format!(
            "not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        )));
    }
    let failed_at = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let decoded = Strict {
        path: String::new(),
        failed_at: &failed_at,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    decoded.map_err(|e| {
        ConfigError::Decode(match failed_at.into_inner() {
            Some(path) if !path.is_empty() => format!("{}: {e}", excerpt(&path)),
            _ => e.to_string(),
        })
    })
}

/// Builds a `Value` at `path` (`ipam.type`, `dns.search[1]`); the first (innermost)
/// value that fails records its path in `failed_at`.
struct Strict<'a> {
    path: String,
    failed_at: &'a RefCell<Option<String>>,
}

impl Strict<'_> {
    fn at(&self, path: String) -> Self {
        Strict {
            path,
            failed_at: self.failed_at,
        }
    }

    fn key(&self, key: &str) -> Self {
        match self.path.as_str() {
            "" => self.at(key.to_string()),
            path => self.at(format!("{path}.{key}")),
        }
    }

    fn index(&self, n: usize) -> Self {
        self.at(format!("{}[{n}]", self.path))
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let (path, failed_at) = (self.path.clone(), self.failed_at);
        deserializer.deserialize_any(self).inspect_err(|_| {
            failed_at.borrow_mut().get_or_insert(path);
        })
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.index(items.len()))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = self.key(&key);
            if obj.contains_key(&key) {
                self.failed_at.borrow_mut().get_or_insert(child.path);
                return Err(de::Error::custom("duplicate key"));
            }
            let value = map.next_value_seed(child)?;
            obj.insert(key, value);
        }
        Ok(Value::Object(obj))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<NetConf, ConfigError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({"cniVersion": "1.1.0", "name": "pods", "type": "netkit-cni"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = base();
        v[key] = value;
        v
    }

    fn invalid_field(v: Value) -> String {
        match parse(v) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.cni_version, Version::V1_1_0);
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.mtu, None);
        assert_eq!(c.ipam, None);
        assert_eq!(c.agent_socket, PathBuf::from(netkit_api::DEFAULT_SOCKET));
        assert_eq!(c.log_file, None);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.big_tcp, BigTcp::default());
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert!(c.dns.is_empty());
        assert_eq!(c.prev_result, None);
        assert_eq!(c.valid_attachments, None);
    }

    #[test]
    fn every_field_parses() {
        let c = parse(json!({
            "cniVersion": "0.4.0", "name": "pods", "type": "netkit-cni",
            "mode": "veth", "mtu": 9000, "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"},
            "agentSocket": "/tmp/a.sock", "logFile": "/tmp/cni.log", "logLevel": "DEBUG",
            "bigTcp": {"gsoMaxSize": 196608, "groMaxSize": 196608, "gsoIpv4MaxSize": 131072, "groIpv4MaxSize": 131072},
            "stateDir": "/tmp/state", "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            "prevResult": {"ips": []},
            "someFutureKey": {"ignored": true}
        }))
        .unwrap();
        assert_eq!(c.cni_version, Version::V0_4_0);
        assert_eq!(c.mode, Mode::Veth);
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(
            c.ipam,
            Some(IpamConf {
                plugin: "host-local".into()
            })
        );
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.big_tcp.gso_max_size, Some(196_608));
        assert_eq!(c.big_tcp.gro_ipv4_max_size, Some(131_072));
        assert_eq!(c.dns.search, ["svc.cluster.local"]);
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn each_invalid_value_names_its_field() {
        let cases = [
            ("mode", json!("bridge"), "mode"),
            ("mode", json!(1), "mode"),
            ("mtu", json!(67), "mtu"),
            ("mtu", json!(65_536), "mtu"),
            ("mtu", json!("1500"), "mtu"),
            ("mtu", json!(-1), "mtu"),
            ("ipam", json!("host-local"), "ipam"),
            ("ipam", json!({}), "ipam.type"),
            ("ipam", json!({"type": ""}), "ipam.type"),
            ("ipam", json!({"type": "../evil"}), "ipam.type"),
            ("ipam", json!({"type": 3}), "ipam.type"),
            ("agentSocket", json!("relative.sock"), "agentSocket"),
            ("agentSocket", json!(false), "agentSocket"),
            ("logFile", json!("cni.log"), "logFile"),
            ("logLevel", json!("loud"), "logLevel"),
            ("bigTcp", json!(1), "bigTcp"),
            ("bigTcp", json!({"gsoMaxSize": 1000}), "bigTcp.gsoMaxSize"),
            (
                "bigTcp",
                json!({"groMaxSize": 600_000}),
                "bigTcp.groMaxSize",
            ),
            (
                "bigTcp",
                json!({"gsoIpv4MaxSize": "big"}),
                "bigTcp.gsoIpv4MaxSize",
            ),
            (
                "bigTcp",
                json!({"groIpv4MaxSize": 1.5}),
                "bigTcp.groIpv4MaxSize",
            ),
            ("stateDir", json!("state"), "stateDir"),
            ("dns", json!({"nameservers": "10.0.0.1"}), "dns.nameservers"),
            ("name", json!("-bad"), "name"),
            (VALID_ATTACHMENTS, json!({}), VALID_ATTACHMENTS),
            (
                VALID_ATTACHMENTS,
                json!([{"containerID": "c"}]),
                "cni.dev/valid-attachments[0].ifname",
            ),
        ];
        for (key, value, field) in cases {
            assert_eq!(
                invalid_field(with(key, value.clone())),
                field,
                "{key}={value}"
            );
        }
        let mut v = base();
        v.as_object_mut().unwrap().remove("name");
        assert_eq!(invalid_field(v), "name");
    }

    #[test]
    fn the_message_names_the_field_and_value() {
        let err = parse(with("mtu", json!(70_000))).unwrap_err().to_string();
        assert!(err.contains("mtu") && err.contains("70000"), "{err}");
    }

    #[test]
    fn null_means_absent() {
        let c = parse(with("ipam", Value::Null)).unwrap();
        assert_eq!(c.ipam, None);
    }

    #[test]
    fn undecodable_documents_and_versions() {
        assert!(matches!(NetConf::parse(b"{"), Err(ConfigError::Decode(_))));
        assert!(matches!(NetConf::parse(b"[]"), Err(ConfigError::Decode(_))));
        assert!(matches!(
            parse(with("cniVersion", json!(1))),
            Err(ConfigError::Decode(_))
        ));
        assert!(matches!(
            parse(with("cniVersion", json!("0.3.1"))),
            Err(ConfigError::Version(_))
        ));
        let mut v = base();
        v.as_object_mut().unwrap().remove("cniVersion");
        assert!(matches!(parse(v), Err(ConfigError::Version(_))));
    }

    #[test]
    fn valid_attachments_parse_under_both_names() {
        let list = json!([{"containerID": "c1", "ifname": "eth0"}]);
        for key in [VALID_ATTACHMENTS, VALID_ATTACHMENTS_OLD] {
            let c = parse(with(key, list.clone())).unwrap();
            let want = vec![EndpointId {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            }];
            assert_eq!(c.valid_attachments, Some(want), "{key}");
        }
        let c = parse(with(VALID_ATTACHMENTS, json!([]))).unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
    }

    #[test]
    fn requested_version_survives_other_errors() {
        assert_eq!(
            requested_version(br#"{"cniVersion": "0.4.0", "mtu": "x"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(requested_version(b"garbage"), None);
    }
}
