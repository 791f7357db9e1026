//! The ADD result document (and the abbreviated IPAM result), read in any supported
//! version and written in the version the runtime asked for.
//!
//! Version differences handled here, in one place:
//! - before 1.0.0 every `ips` entry carries `"version": "4"|"6"`;
//! - 1.1.0 added interface `mtu`, `socketPath`, `pciID` and route `mtu`, `advmss`,
//!   `priority`, `table`, `scope` — they are dropped when answering in an older version.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::error::excerpt;
use crate::spec::version::Version;

/// An address with prefix length, as CNI documents write them (`10.0.0.5/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Cidr {
        Cidr { addr, prefix }
    }

    /// The address alone: /32 or /128.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The default route of the address's family.
    pub fn default_route_for(addr: IpAddr) -> Cidr {
        let any = match addr {
            IpAddr::V4(_) => IpAddr::from([0u8; 4]),
            IpAddr::V6(_) => IpAddr::from([0u8; 16]),
        };
        Cidr {
            addr: any,
            prefix: 0,
        }
    }

    pub fn parse(s: &str) -> Option<Cidr> {
        netkit_api::parse_cidr(s).map(|(addr, prefix)| Cidr { addr, prefix })
    }

    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEntry {
    pub address: Cidr,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; absent in IPAM results.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: Cidr,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

impl RouteEntry {
    pub fn new(dst: Cidr, gw: Option<IpAddr>) -> RouteEntry {
        RouteEntry {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// A CNI result: what ADD prints, what `prevResult` holds, what IPAM plugins return
/// (without interfaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpEntry>,
    pub routes: Vec<RouteEntry>,
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct ResultError {
    /// Which document and field: `prevResult.ips[0].address`.
    pub what: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cni_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<WireInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ips: Vec<WireIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<WireRoute>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    dns: Dns,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(expecting = "an interface object")]
struct WireInterface {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sandbox: Option<String>,
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(expecting = "an IP object")]
struct WireIp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(expecting = "a route object")]
struct WireRoute {
    dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<u32>,
}

impl WireResult {
    /// Decode a result one list element at a time, so that an error names the element
    /// (`prevResult.ips[1]`) and not only the document. `null` counts as absent.
    fn decode(value: &Value, what: &str) -> Result<WireResult, ResultError> {
        let Value::Object(obj) = value else {
            return Err(ResultError {
                what: what.to_string(),
                reason: format!("must be an object, not {}", excerpt(&value.to_string())),
            });
        };
        let part = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let at = |path: String| {
            move |e: serde_json::Error| ResultError {
                what: path,
                reason: e.to_string(),
            }
        };
        fn list<T: serde::de::DeserializeOwned>(
            what: &str,
            key: &str,
            v: Option<&Value>,
        ) -> Result<Vec<T>, ResultError> {
            match v {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(n, item)| {
                        T::deserialize(item).map_err(|e| ResultError {
                            what: format!("{what}.{key}[{n}]"),
                            reason: e.to_string(),
                        })
                    })
                    .collect(),
                Some(other) => Err(ResultError {
                    what: format!("{what}.{key}"),
                    reason: format!("must be an array, not {}", excerpt(&other.to_string())),
                }),
            }
        }
        Ok(WireResult {
            cni_version: part("cniVersion")
                .map(|v| Option::<String>::deserialize(v).map_err(at(format!("{what}.cniVersion"))))
                .transpose()?
                .flatten(),
            interfaces: list(what, "interfaces", part("interfaces"))?,
            ips: list(what, "ips", part("ips"))?,
            routes: list(what, "routes", part("routes"))?,
            dns: part("dns")
                .map(|v| Dns::deserialize(v).map_err(at(format!("{what}.dns"))))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// Empty strings mean "absent" in documents written by Go plugins.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl CniResult {
    /// Read a result of any supported version. `what` names the document in errors
    /// (`prevResult`, `IPAM result`).
    pub fn from_value(value: &Value, what: &str) -> Result<CniResult, ResultError> {
        let wire = WireResult::decode(value, what)?;
        let bad = |field: String, reason: String| ResultError {
            what: format!("{what}.{field}"),
            reason,
        };
        let ip = |field: String, s: String| -> Result<IpAddr, ResultError> {
            s.parse()
                .map_err(|_| bad(field, format!("{s:?} is not an IP address")))
        };
        let cidr = |field: String, s: String| -> Result<Cidr, ResultError> {
            Cidr::parse(&s).ok_or_else(|| bad(field, format!("{s:?} is not an address/prefix")))
        };

        let interfaces = wire
            .interfaces
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: non_empty(i.mac),
                mtu: i.mtu.filter(|m| *m != 0),
                sandbox: non_empty(i.sandbox),
                socket_path: non_empty(i.socket_path),
                pci_id: non_empty(i.pci_id),
            })
            .collect();
        let mut ips = Vec::new();
        for (n, w) in wire.ips.into_iter().enumerate() {
            let address = cidr(format!("ips[{n}].address"), w.address)?;
            let gateway = match non_empty(w.gateway) {
                Some(g) => Some(ip(format!("ips[{n}].gateway"), g)?),
                None => None,
            };
            ips.push(IpEntry {
                address,
                gateway,
                interface: w.interface,
            });
        }
        let mut routes = Vec::new();
        for (n, w) in wire.routes.into_iter().enumerate() {
            let dst = cidr(format!("routes[{n}].dst"), w.dst)?;
            let gw = match non_empty(w.gw) {
                Some(g) => Some(ip(format!("routes[{n}].gw"), g)?),
                None => None,
            };
            routes.push(RouteEntry {
                dst,
                gw,
                mtu: w.mtu,
                advmss: w.advmss,
                priority: w.priority,
                table: w.table,
                scope: w.scope,
            });
        }
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns: wire.dns,
        })
    }

    /// The document to print, in `version`'s shape.
    pub fn to_value(&self, version: Version) -> Value {
        let new_fields = version.has_1_1_fields();
        let wire = WireResult {
            cni_version: Some(version.as_str().to_string()),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| WireInterface {
                    name: i.name.clone(),
                    mac: i.mac.clone(),
                    mtu: i.mtu.filter(|_| new_fields),
                    sandbox: i.sandbox.clone(),
                    socket_path: i.socket_path.clone().filter(|_| new_fields),
                    pci_id: i.pci_id.clone().filter(|_| new_fields),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| WireIp {
                    version: version
                        .ips_carry_version()
                        .then(|| if ip.address.addr.is_ipv4() { "4" } else { "6" }.to_string()),
                    address: ip.address.to_string(),
                    gateway: ip.gateway.map(|g| g.to_string()),
                    interface: ip.interface,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| WireRoute {
                    dst: r.dst.to_string(),
                    gw: r.gw.map(|g| g.to_string()),
                    mtu: r.mtu.filter(|_| new_fields),
                    advmss: r.advmss.filter(|_| new_fields),
                    priority: r.priority.filter(|_| new_fields),
                    table: r.table.filter(|_| new_fields),
                    scope: r.scope.filter(|_| new_fields),
                })
                .collect(),
            dns: self.dns.clone(),
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_value(wire).unwrap_or(Value::Null)
    }

    /// Chaining: append this plugin's interfaces, IPs and routes to the previous
    /// plugin's result, moving our `interface` indexes past its interfaces.
    pub fn appended_to(self, mut prev: CniResult) -> CniResult {
        let base = prev.interfaces.len();
        prev.interfaces.extend(self.interfaces);
        prev.ips.extend(self.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        prev.routes.extend(self.routes);
        if prev.dns.is_empty() {
            prev.dns = self.dns;
        }
        prev
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "nk0123".into(),
                    mtu: Some(1500),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1500),
                    sandbox: Some("/run/netns/p".into()),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpEntry {
                    address: Cidr::parse("10.0.0.5/32").unwrap(),
                    gateway: Some("169.254.1.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpEntry {
                    address: Cidr::parse("fd00::5/128").unwrap(),
                    gateway: Some("fe80::1".parse().unwrap()),
                    interface: Some(1),
                },
            ],
            routes: vec![RouteEntry {
                mtu: Some(1400),
                ..RouteEntry::new(
                    Cidr::parse("0.0.0.0/0").unwrap(),
                    Some("169.254.1.1".parse().unwrap()),
                )
            }],
            dns: Dns {
                nameservers: vec!["10.96.0.10".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn version_1_1_0_keeps_everything() {
        let v = sample().to_value(Version::V1_1_0);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(v["interfaces"][1]["mtu"], 1500);
        assert_eq!(v["ips"][0]["address"], "10.0.0.5/32");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][0]["mtu"], 1400);
        assert_eq!(v["dns"]["nameservers"][0], "10.96.0.10");
    }

    #[test]
    fn version_0_4_0_adds_ip_versions_and_drops_1_1_fields() {
        let v = sample().to_value(Version::V0_4_0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert!(v["routes"][0].get("mtu").is_none());
        assert_eq!(v["routes"][0]["gw"], "169.254.1.1");
        assert_eq!(v["interfaces"][1]["mac"], "02:00:00:00:00:01");
    }

    #[test]
    fn version_1_0_0_has_neither() {
        let v = sample().to_value(Version::V1_0_0);
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn results_read_back_in_every_version() {
        for version in Version::SUPPORTED {
            let v = sample().to_value(version);
            let back = CniResult::from_value(&v, "prevResult").unwrap();
            assert_eq!(back.ips, sample().ips, "{version}");
            assert_eq!(back.interfaces.len(), 2);
        }
    }

    #[test]
    fn ipam_results_parse_without_interfaces() {
        let v = json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.9.0.2/24", "gateway": "10.9.0.1"}],
            "dns": {}
        });
        let r = CniResult::from_value(&v, "IPAM result").unwrap();
        assert_eq!(r.ips[0].address, Cidr::parse("10.9.0.2/24").unwrap());
        assert_eq!(r.ips[0].interface, None);
        assert!(r.dns.is_empty());
    }

    #[test]
    fn bad_fields_are_named() {
        let v = json!({"ips": [{"address": "10.0.0.5"}]});
        let err = CniResult::from_value(&v, "prevResult").unwrap_err();
        assert_eq!(err.what, "prevResult.ips[0].address");
        let v = json!({"ips": "nope"});
        assert_eq!(
            CniResult::from_value(&v, "prevResult").unwrap_err().what,
            "prevResult.ips"
        );
    }

    #[test]
    fn chaining_moves_our_indexes_past_the_previous_interfaces() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "other".into(),
                ..Default::default()
            }],
            ips: vec![IpEntry {
                address: Cidr::parse("192.168.0.2/24").unwrap(),
                gateway: None,
                interface: Some(0),
            }],
            ..Default::default()
        };
        let merged = sample().appended_to(prev);
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[0].interface, Some(0));
        assert_eq!(merged.ips[1].interface, Some(2));
        assert_eq!(merged.dns.nameservers, ["10.96.0.10"]);
    }
}
