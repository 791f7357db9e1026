//! Pods wired by the real `netkit-cni`: a node namespace running the agent, pods that are
//! namespaces, and the plugin invoked exactly as libcni invokes it (`CNI_*` environment,
//! the configuration on stdin, a result or an error document on stdout). Used by the netns
//! tier (veth fallback) and inside the VM (netkit).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::agent::{Agent, AgentDirs};
use crate::bins;
use crate::netns::{At, Netns};

pub const POD_CIDR4: &str = "10.61.0.0/24";
pub const POD_CIDR6: &str = "fd00:61::/64";
/// An address the node answers on (on its `lo`), for pod → node traffic.
pub const NODE_IP: &str = "192.0.2.1";

/// The agent's arguments: a `--pod-cidr` for each of `pod_cidrs`, then `agent_args`.
fn agent_argv<'a>(pod_cidrs: &'a [String], agent_args: &'a [String]) -> Vec<&'a str> {
    pod_cidrs
        .iter()
        .flat_map(|cidr| ["--pod-cidr", cidr.as_str()])
        .chain(agent_args.iter().map(String::as_str))
        .collect()
}

/// A node: a namespace running the agent, plus the plugin's state and log.
pub struct Node {
    pub ns: Netns,
    pub dirs: AgentDirs,
    pub agent: Option<Agent>,
    pub agent_args: Vec<String>,
    /// The agent's `--pod-cidr`s, kept for its restarts.
    pub pod_cidrs: Vec<String>,
    pub cni_dir: tempfile::TempDir,
}

impl Node {
    pub fn new(tag: &str) -> Node {
        Node::with_agent_args(tag, &["--no-uplink"])
    }

    /// A node whose agent gets `agent_args` (for example `--uplink IF`) besides the pod CIDRs.
    pub fn with_agent_args(tag: &str, agent_args: &[&str]) -> Node {
        Node::with_pod_cidrs(tag, &[POD_CIDR4, POD_CIDR6], agent_args)
    }

    /// A node whose built-in IPAM hands out IPv4 addresses only (IPv4-only pods).
    pub fn ipv4_only(tag: &str) -> Node {
        Node::with_pod_cidrs(tag, &[POD_CIDR4], &["--no-uplink"])
    }

    /// A node whose agent allocates from `pod_cidrs` and gets `agent_args`.
    pub fn with_pod_cidrs(tag: &str, pod_cidrs: &[&str], agent_args: &[&str]) -> Node {
        let ns = Netns::new(tag);
        ns.ip(&format!("addr add {NODE_IP}/32 dev lo"));
        let dirs = AgentDirs::new(tag);
        let agent_args: Vec<String> = agent_args.iter().map(|a| a.to_string()).collect();
        let pod_cidrs: Vec<String> = pod_cidrs.iter().map(|c| c.to_string()).collect();
        let mut node = Node {
            ns,
            dirs,
            agent: None,
            agent_args,
            pod_cidrs,
            cni_dir: tempfile::tempdir().unwrap(),
        };
        node.agent = Some(node.start_agent());
        node
    }

    fn start_agent(&self) -> Agent {
        Agent::start(
            &self.ns,
            &self.dirs,
            &agent_argv(&self.pod_cidrs, &self.agent_args),
        )
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent is running")
    }

    pub fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop();
        }
    }

    /// Kill the agent with SIGKILL (a crash) and start a new one at once.
    pub fn crash_and_restart_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.kill();
        }
        self.agent = Some(self.start_agent());
    }

    /// Restart the agent with `env` added to its environment (fault injection).
    pub fn restart_agent_with_env(&mut self, env: &[(&str, &str)]) {
        self.stop_agent();
        let mut cmd = self.ns.command(bins::agent());
        cmd.envs(env.iter().copied());
        let args = agent_argv(&self.pod_cidrs, &self.agent_args);
        self.agent = Some(Agent::spawn(cmd, &self.dirs, &args));
    }

    pub fn restart_agent(&mut self) {
        self.stop_agent();
        self.agent = Some(self.start_agent());
    }

    pub fn state_dir(&self) -> PathBuf {
        self.cni_dir.path().join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.cni_dir.path().join("cni.log")).unwrap_or_default()
    }

    /// A 1.1.0 configuration for this node, with `extra` keys merged in.
    pub fn conf(&self, extra: Value) -> Value {
        let mut conf = json!({
            "cniVersion": "1.1.0",
            "name": "pods",
            "type": "netkit-cni",
            "agentSocket": self.dirs.socket(),
            "stateDir": self.state_dir(),
            "logFile": self.cni_dir.path().join("cni.log"),
            "logLevel": "debug",
        });
        for (k, v) in extra.as_object().expect("extra keys are an object") {
            conf[k] = v.clone();
        }
        conf
    }

    /// A delegated host-local configuration (Debian's host-local speaks up to 1.0.0).
    pub fn host_local_conf(&self) -> Value {
        self.conf(json!({
            "cniVersion": "1.0.0",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.62.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "172.16.0.0/12"}],
                "dataDir": self.cni_dir.path().join("host-local"),
            },
        }))
    }

    /// Invoke the plugin inside the node, as libcni does.
    pub fn cni(&self, call: Call<'_>, conf: &Value) -> Reply {
        let mut cmd = self.ns.command(bins::cni());
        invoke(&mut cmd, call, &conf.to_string())
    }

    pub fn add(&self, pod: &Pod, conf: &Value) -> Value {
        let reply = self.cni(Call::add(pod), conf);
        assert!(
            reply.ok,
            "ADD failed: {reply:?}\nplugin log:\n{}",
            self.log()
        );
        reply.json
    }

    pub fn del(&self, container: &str, ifname: &str, netns: Option<&Path>, conf: &Value) {
        let call = Call {
            command: "DEL",
            container,
            ifname,
            netns,
            cni_path: Some("/usr/lib/cni"),
        };
        let reply = self.cni(call, conf);
        assert!(
            reply.ok,
            "DEL failed: {reply:?}\nplugin log:\n{}",
            self.log()
        );
        assert_eq!(reply.json, Value::Null, "DEL prints nothing on success");
        if let Some(agent) = &self.agent {
            agent.wait_for_teardowns();
        }
    }

    /// Host links made by the plugin (`nk` + 11 hex digits).
    pub fn plugin_links(&self) -> Vec<String> {
        At::Ns(&self.ns)
            .links()
            .into_iter()
            .filter(|l| {
                l.len() == 13
                    && l.starts_with("nk")
                    && l[2..].chars().all(|c| c.is_ascii_hexdigit())
            })
            .collect()
    }

    /// The `cls_bpf` filters at ingress of host link `name`: where a veth endpoint's
    /// egress program runs.
    pub fn ingress_filters(&self, name: &str) -> Vec<netkit_netlink::tc::BpfFilter> {
        use netkit_netlink::{Kernel as _, Ns, RtKernel};
        let mut kernel = RtKernel::in_netns(self.ns.path()).unwrap();
        let link = kernel
            .link_by_name(Ns::Host, name)
            .unwrap()
            .unwrap_or_else(|| panic!("no host link {name}"));
        kernel
            .bpf_filters(Ns::Host, link.index, netkit_netlink::tc::Hook::Ingress)
            .unwrap()
    }

    /// `(container, ifname)` of the agent's endpoints.
    pub fn endpoints(&self) -> BTreeSet<(String, String)> {
        self.agent()
            .endpoints()
            .iter()
            .map(|e| {
                let id = &e["id"];
                (
                    id["container_id"].as_str().unwrap().to_string(),
                    id["ifname"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn queued_deletions(&self) -> usize {
        std::fs::read_dir(self.state_dir().join("del-queue"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A pod: a namespace and the attachment's ids.
pub struct Pod {
    pub ns: Netns,
    pub container: String,
    pub ifname: &'static str,
}

impl Pod {
    pub fn new(tag: &str) -> Pod {
        let ns = Netns::new(tag);
        // Container ids as the runtimes make them: 64 hex digits, unique per pod.
        let container = format!(
            "{:0>64}",
            ns.name().replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        Pod {
            ns,
            container,
            ifname: "eth0",
        }
    }

    pub fn links(&self) -> Vec<String> {
        let mut links = At::Ns(&self.ns).links();
        links.sort();
        links
    }
}

/// One invocation's parameters.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container: &'a str,
    pub ifname: &'a str,
    pub netns: Option<&'a Path>,
    pub cni_path: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn add(pod: &'a Pod) -> Call<'a> {
        Call {
            command: "ADD",
            container: &pod.container,
            ifname: pod.ifname,
            netns: Some(pod.ns.path()),
            cni_path: Some("/usr/lib/cni"),
        }
    }

    pub fn with(self, command: &'a str) -> Call<'a> {
        Call { command, ..self }
    }

    pub fn bare(command: &'a str) -> Call<'a> {
        Call {
            command,
            container: "",
            ifname: "",
            netns: None,
            cni_path: Some("/usr/lib/cni"),
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    /// stdout as JSON; `Null` when empty.
    pub json: Value,
    pub stderr: String,
}

impl Reply {
    /// The error code, checking the error document's shape on the way.
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected a failure, got {self:?}");
        assert!(
            self.json["cniVersion"].is_string(),
            "error without cniVersion: {self:?}"
        );
        assert!(self.json["msg"].is_string(), "error without msg: {self:?}");
        self.json["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error without code: {self:?}"))
    }

    pub fn msg(&self) -> String {
        format!(
            "{} {}",
            self.json["msg"].as_str().unwrap_or(""),
            self.json["details"].as_str().unwrap_or("")
        )
    }
}

/// Run the plugin with libcni's environment: ours minus any `CNI_*`, plus the call's.
pub fn invoke(cmd: &mut Command, call: Call<'_>, stdin: &str) -> Reply {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(key);
        }
    }
    let vars = [
        ("CNI_COMMAND", Some(call.command.to_string())),
        ("CNI_CONTAINERID", Some(call.container.to_string())),
        ("CNI_NETNS", call.netns.map(|p| p.display().to_string())),
        ("CNI_IFNAME", Some(call.ifname.to_string())),
        (
            "CNI_ARGS",
            Some("IgnoreUnknown=1;K8S_POD_NAME=test".to_string()),
        ),
        ("CNI_PATH", call.cni_path.map(str::to_string)),
    ];
    for (key, value) in vars {
        match value {
            Some(v) if !v.is_empty() => cmd.env(key, v),
            _ => cmd.env(key, ""),
        };
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start netkit-cni: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"))
    };
    Reply {
        ok: out.status.success(),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn with_prev_result(conf: &Value, result: &Value) -> Value {
    let mut conf = conf.clone();
    conf["prevResult"] = result.clone();
    conf
}

/// The pod's first address of a family, from an ADD result.
pub fn pod_ip(result: &Value, v6: bool) -> String {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .find(|a| a.contains(':') == v6)
        .unwrap_or_else(|| {
            panic!(
                "no {} address in {result}",
                if v6 { "IPv6" } else { "IPv4" }
            )
        })
}
