//! Installing the CNI on the node, as kindnet and Cilium do: the agent's image carries
//! the plugin binaries and the agent copies them into the host's CNI bin directory and
//! writes the conflist into the host's CNI config directory. The runtime (containerd's
//! CRI plugin) reports the node's network ready as soon as a conflist exists, so the
//! agent does this only once it serves: a pod the kubelet starts then finds the agent.
//!
//! Every file is replaced atomically (a temporary file in the same directory, fsynced,
//! renamed over the old one, the directory fsynced) and only when its content changes:
//! the runtime reads the configuration directory whenever it likes, and a pod start may
//! be executing the old plugin binary at that moment.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The conflist's file name: early in the directory's lexical order, which is the order
/// in which the runtime picks the first configuration.
pub const CONFLIST_NAME: &str = "10-netkit.conflist";

/// The CNI version the conflist asks for. The plugin speaks 1.1.0 too, but Debian's
/// containerd 1.6 (libcni 1.1) and its portmap know 1.0.0 at most.
pub const CNI_VERSION: &str = "1.0.0";

const BINARY_MODE: u32 = 0o755;
const CONF_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("reading the CNI binaries to install from {dir}: {source}")]
    SourceDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir} holds no regular file: nothing to install")]
    NothingToInstall { dir: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step} {path}: {source}")]
    Write {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI configuration: {field}: {reason}")]
    InvalidConf { field: &'static str, reason: String },
}

pub type Result<T> = std::result::Result<T, InstallError>;

/// How the plugin makes pod links (its `mode` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkMode {
    Auto,
    Netkit,
    Veth,
}

impl LinkMode {
    fn as_str(self) -> &'static str {
        match self {
            LinkMode::Auto => "auto",
            LinkMode::Netkit => "netkit",
            LinkMode::Veth => "veth",
        }
    }
}

/// What goes into the conflist. Only keys the plugin reads (see its README); every
/// absent setting is left to the plugin's default.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfSettings {
    /// The network's `name`.
    pub network_name: String,
    pub mtu: Option<u32>,
    pub mode: Option<LinkMode>,
    /// A delegated IPAM section (`{"type": "host-local", ...}`) as JSON text; absent:
    /// built-in IPAM, the agent allocates from the node's pod CIDRs.
    pub ipam: Option<String>,
    /// The agent's socket, when not the plugin's default.
    pub agent_socket: Option<PathBuf>,
    /// Where the plugin logs (on the node).
    pub log_file: Option<PathBuf>,
}

/// The delegated IPAM section `text` as a JSON object with a `type`, or why not.
pub fn parse_ipam(text: &str) -> Result<Map<String, Value>> {
    let invalid = |reason: String| InstallError::InvalidConf {
        field: "ipam",
        reason,
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(ipam)) => match ipam.get("type") {
            Some(Value::String(t)) if !t.is_empty() => Ok(ipam),
            _ => Err(invalid("needs a \"type\": the IPAM plugin's name".into())),
        },
        Ok(_) => Err(invalid("must be a JSON object".into())),
        Err(e) => Err(invalid(format!("not JSON: {e}"))),
    }
}

/// The conflist for `settings`: the plugin, then `portmap` for hostPort (which reads
/// the runtime's port mappings through its capability), as pretty JSON with a final
/// newline. Values the plugin would refuse are refused here, naming the field.
pub fn conflist(settings: &ConfSettings) -> Result<String> {
    let invalid = |field, reason: String| InstallError::InvalidConf { field, reason };
    // The plugin's rule for names (CNI's): a letter or digit, then letters, digits,
    // '_', '.' or '-'.
    let name = &settings.network_name;
    let mut chars = name.chars();
    let name_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return Err(invalid(
            "name",
            format!(
                "{name:?} must start with a letter or digit followed by letters, digits, '_', '.' or '-'"
            ),
        ));
    }
    let mut plugin = Map::new();
    plugin.insert("type".into(), json!("netkit-cni"));
    if let Some(mode) = settings.mode {
        plugin.insert("mode".into(), json!(mode.as_str()));
    }
    if let Some(mtu) = settings.mtu {
        if !(68..=65_535).contains(&mtu) {
            return Err(invalid("mtu", format!("{mtu} is outside 68..=65535")));
        }
        plugin.insert("mtu".into(), json!(mtu));
    }
    if let Some(ipam) = &settings.ipam {
        plugin.insert("ipam".into(), Value::Object(parse_ipam(ipam)?));
    }
    for (key, path) in [
        ("agentSocket", &settings.agent_socket),
        ("logFile", &settings.log_file),
    ] {
        let Some(path) = path else { continue };
        let Some(text) = path.to_str().filter(|_| path.is_absolute()) else {
            return Err(invalid(
                key,
                format!("{} is not an absolute UTF-8 path", path.display()),
            ));
        };
        plugin.insert(key.into(), json!(text));
    }
    let doc = json!({
        "cniVersion": CNI_VERSION,
        "name": name,
        "plugins": [
            Value::Object(plugin),
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    let mut text =
        serde_json::to_string_pretty(&doc).map_err(|e| invalid("(document)", e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Write the conflist for `settings` into `dir` (created if missing) unless it already
/// says exactly that. Returns whether it wrote.
pub fn install_conflist(dir: &Path, settings: &ConfSettings) -> Result<bool> {
    let text = conflist(settings)?;
    create_dir(dir)?;
    replace_if_changed(&dir.join(CONFLIST_NAME), text.as_bytes(), CONF_MODE)
}

/// Configuration files in `dir` that the runtime would pick before ours (it takes the
/// first `.conf`, `.conflist` or `.json` in lexical order).
pub fn earlier_configs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut earlier: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext))
                && name.as_str() < CONFLIST_NAME
                && !name.starts_with('.')
        })
        .collect();
    earlier.sort();
    earlier
}

/// Copy every regular file in `from` (symlinks followed) into `to` (created if
/// missing), mode 0755, each only when its content or mode differs. Returns the names
/// of the files written.
pub fn install_binaries(from: &Path, to: &Path) -> Result<Vec<String>> {
    let source_err = |source| InstallError::SourceDir {
        dir: from.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(from).map_err(source_err)? {
        let entry = entry.map_err(source_err)?;
        let path = entry.path();
        // `fs::metadata` follows a symlink: an image may link its binaries.
        let meta = fs::metadata(&path).map_err(|source| InstallError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_file() {
            names.push(entry.file_name());
        }
    }
    if names.is_empty() {
        return Err(InstallError::NothingToInstall {
            dir: from.to_path_buf(),
        });
    }
    names.sort();
    create_dir(to)?;
    let mut written = Vec::new();
    for name in names {
        let source = from.join(&name);
        let content = fs::read(&source).map_err(|e| InstallError::Read {
            path: source.clone(),
            source: e,
        })?;
        if replace_if_changed(&to.join(&name), &content, BINARY_MODE)? {
            written.push(name.to_string_lossy().into_owned());
        }
    }
    Ok(written)
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| InstallError::Write {
        step: "creating",
        path: dir.to_path_buf(),
        source,
    })
}

/// Replace `path` by a file holding `content` with permissions `mode`, unless it is a
/// regular file that already does. The new file is written beside it under a temporary
/// name, fsynced and renamed over it, then the directory is fsynced: a reader sees the
/// old file or the new one, never a part of either, even across a crash. Returns
/// whether it wrote.
pub fn replace_if_changed(path: &Path, content: &[u8], mode: u32) -> Result<bool> {
    if let Ok(meta) = fs::symlink_metadata(path)
        && meta.is_file()
        && meta.permissions().mode() & 0o7777 == mode
        && meta.len() == content.len() as u64
        && fs::read(path).is_ok_and(|current| current == content)
    {
        return Ok(false);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(InstallError::Write {
            step: "naming",
            path: path.to_path_buf(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    // A dot name with a suffix no runtime reads: libcni lists only .conf, .conflist
    // and .json, and never executes what no configuration names.
    let tmp = dir.join(format!(".{}.netkit-tmp", name.to_string_lossy()));
    let result = write_then_rename(&tmp, path, content, mode);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

fn write_then_rename(tmp: &Path, path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let err = |step, at: &Path| {
        let at = at.to_path_buf();
        move |source| InstallError::Write {
            step,
            path: at,
            source,
        }
    };
    // A temporary file left by an agent that died mid-write is ours to replace.
    match fs::remove_file(tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(err("removing the stale", tmp)(e));
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(err("creating", tmp))?;
    // The process umask may have narrowed the mode `open` applied.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err("setting the mode of", tmp))?;
    file.write_all(content).map_err(err("writing", tmp))?;
    file.sync_all().map_err(err("fsync of", tmp))?;
    drop(file);
    fs::rename(tmp, path).map_err(err("renaming into place", path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("fsync of", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn settings() -> ConfSettings {
        ConfSettings {
            network_name: "netkit".into(),
            mtu: None,
            mode: None,
            ipam: None,
            agent_socket: None,
            log_file: None,
        }
    }

    #[test]
    fn the_default_conflist_is_builtin_ipam_with_portmap() {
        let text = conflist(&settings()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc,
            json!({
                "cniVersion": "1.0.0",
                "name": "netkit",
                "plugins": [
                    {"type": "netkit-cni"},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                ],
            })
        );
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn settings_become_the_plugins_keys() {
        let text = conflist(&ConfSettings {
            network_name: "pods".into(),
            mtu: Some(1450),
            mode: Some(LinkMode::Veth),
            ipam: Some(r#"{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/16"}]]}"#.into()),
            agent_socket: Some("/run/netkit/other.sock".into()),
            log_file: Some("/var/log/netkit-cni.log".into()),
        })
        .unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let plugin = &doc["plugins"][0];
        assert_eq!(plugin["mtu"], 1450);
        assert_eq!(plugin["mode"], "veth");
        assert_eq!(plugin["ipam"]["type"], "host-local");
        assert_eq!(plugin["agentSocket"], "/run/netkit/other.sock");
        assert_eq!(plugin["logFile"], "/var/log/netkit-cni.log");
        assert_eq!(doc["name"], "pods");
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let cases: Vec<(ConfSettings, &str)> = vec![
            (
                ConfSettings {
                    network_name: "-bad".into(),
                    ..settings()
                },
                "name",
            ),
            (
                ConfSettings {
                    mtu: Some(40),
                    ..settings()
                },
                "mtu",
            ),
            (
                ConfSettings {
                    ipam: Some("{\"ranges\": []}".into()),
                    ..settings()
                },
                "ipam",
            ),
            (
                ConfSettings {
                    ipam: Some("host-local".into()),
                    ..settings()
                },
                "ipam",
            ),
            (
                ConfSettings {
                    log_file: Some("relative.log".into()),
                    ..settings()
                },
                "logFile",
            ),
        ];
        for (s, field) in cases {
            let err = conflist(&s).unwrap_err().to_string();
            assert!(err.contains(&format!("{field}:")), "{s:?}: {err}");
        }
    }

    #[test]
    fn unchanged_content_is_not_rewritten_changed_content_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        assert!(install_conflist(&conf, &settings()).unwrap(), "first write");
        let path = conf.join(CONFLIST_NAME);
        let before = fs::metadata(&path).unwrap();
        assert_eq!(before.mode() & 0o7777, CONF_MODE);
        assert!(!install_conflist(&conf, &settings()).unwrap());
        let after = fs::metadata(&path).unwrap();
        assert_eq!(
            (before.ino(), before.mtime(), before.mtime_nsec()),
            (after.ino(), after.mtime(), after.mtime_nsec()),
            "an unchanged conflist was touched"
        );

        // A reader holding the old file keeps reading the old content: the new one
        // arrived by rename, as a new inode.
        let mut held = File::open(&path).unwrap();
        let changed = ConfSettings {
            mtu: Some(1400),
            ..settings()
        };
        assert!(install_conflist(&conf, &changed).unwrap());
        let replaced = fs::metadata(&path).unwrap();
        assert_ne!(replaced.ino(), before.ino());
        let mut old = String::new();
        std::io::Read::read_to_string(&mut held, &mut old).unwrap();
        assert!(!old.contains("1400"));
        assert!(fs::read_to_string(&path).unwrap().contains("\"mtu\": 1400"));
        let names: Vec<_> = fs::read_dir(&conf)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CONFLIST_NAME], "no temporary file is left");
    }

    #[test]
    fn binaries_are_copied_executable_and_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("image");
        let to = dir.path().join("bin");
        fs::create_dir(&from).unwrap();
        fs::create_dir(from.join("subdir")).unwrap();
        fs::write(from.join("netkit-cni"), b"plugin v1").unwrap();
        fs::write(from.join("portmap"), b"portmap").unwrap();
        fs::set_permissions(from.join("portmap"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("portmap", from.join("linked")).unwrap();

        let written = install_binaries(&from, &to).unwrap();
        assert_eq!(written, ["linked", "netkit-cni", "portmap"]);
        for name in &written {
            let meta = fs::symlink_metadata(to.join(name)).unwrap();
            assert!(meta.is_file(), "{name} is a copy, not a link");
            assert_eq!(meta.mode() & 0o7777, 0o755, "{name}");
        }
        assert!(!to.join("subdir").exists());

        let inode = |name: &str| fs::metadata(to.join(name)).unwrap().ino();
        let (plugin, portmap) = (inode("netkit-cni"), inode("portmap"));
        assert!(install_binaries(&from, &to).unwrap().is_empty());
        assert_eq!(inode("netkit-cni"), plugin);

        fs::write(from.join("netkit-cni"), b"plugin v2").unwrap();
        assert_eq!(install_binaries(&from, &to).unwrap(), ["netkit-cni"]);
        assert_ne!(inode("netkit-cni"), plugin);
        assert_eq!(inode("portmap"), portmap);
        assert_eq!(fs::read(to.join("netkit-cni")).unwrap(), b"plugin v2");

        // A mode someone changed is put back.
        fs::set_permissions(to.join("portmap"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(install_binaries(&from, &to).unwrap(), ["portmap"]);
    }

    #[test]
    fn a_bad_source_dir_is_a_readable_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = install_binaries(&missing, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains("No such file"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let err = install_binaries(&empty, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no regular file"), "{err}");
    }

    #[test]
    fn earlier_configs_are_found() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "05-other.conflist",
            "99-late.conf",
            ".hidden.conf",
            "01-notes.txt",
        ] {
            fs::write(dir.path().join(name), "{}").unwrap();
        }
        assert_eq!(earlier_configs(dir.path()), ["05-other.conflist"]);
    }
}
