//! The invocation: `CNI_*` environment variables, validated per command as the spec
//! lists them.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::spec::error::excerpt;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Variables the spec marks required for this command (besides `CNI_COMMAND`).
    /// `CNI_PATH` is only required where a delegated plugin must be found; see
    /// `Invocation::cni_path`.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &[CONTAINER_ID, NETNS, IFNAME],
            Command::Del => &[CONTAINER_ID, IFNAME],
            Command::Status | Command::Gc | Command::Version => &[],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const COMMAND: &str = "CNI_COMMAND";
pub const CONTAINER_ID: &str = "CNI_CONTAINERID";
pub const NETNS: &str = "CNI_NETNS";
pub const IFNAME: &str = "CNI_IFNAME";
pub const ARGS: &str = "CNI_ARGS";
pub const PATH: &str = "CNI_PATH";

/// One plugin invocation as the runtime described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// Empty for commands without an attachment (STATUS, GC, VERSION).
    pub container_id: String,
    /// `None` when unset or empty (allowed for DEL).
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: String,
    /// `CNI_PATH`, unsplit; `None` when unset or empty.
    pub cni_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("required environment variables missing: {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("CNI_COMMAND={:?} is not a CNI command (ADD, DEL, CHECK, STATUS, GC, VERSION)", excerpt(.0))]
    UnknownCommand(String),
    #[error("{var}={:?} is invalid: {reason}", excerpt(value))]
    Invalid {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{var} is not valid UTF-8 ({:?})", excerpt(value))]
    NotUnicode { var: &'static str, value: String },
}

/// Every variable the plugin reads, in the order it reports them.
const VARS: [&str; 6] = [COMMAND, CONTAINER_ID, NETNS, IFNAME, ARGS, PATH];

impl Invocation {
    /// Read and validate the invocation from `get` (the process environment in
    /// production). A variable that is not UTF-8 is refused by name rather than taken
    /// for absent.
    pub fn from_env(get: impl Fn(&str) -> Option<OsString>) -> Result<Invocation, EnvError> {
        let mut vars: Vec<(&str, String)> = Vec::with_capacity(VARS.len());
        for name in VARS {
            match get(name).map(OsString::into_string) {
                None => {}
                Some(Ok(value)) => vars.push((name, value)),
                Some(Err(raw)) => {
                    return Err(EnvError::NotUnicode {
                        var: name,
                        value: raw.to_string_lossy().into_owned(),
                    });
                }
            }
        }
        Invocation::from_vars(|name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| value.clone())
        })
    }

    /// Read and validate the invocation from variables already known to be UTF-8 (a
    /// map in tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, EnvError> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let command = match var(COMMAND) {
            None => return Err(EnvError::Missing(vec![COMMAND])),
            Some(c) => Command::parse(&c).ok_or(EnvError::UnknownCommand(c))?,
        };
        let missing: Vec<&'static str> = command
            .required()
            .iter()
            .copied()
            .filter(|name| var(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::Missing(missing));
        }
        let inv = Invocation {
            command,
            container_id: var(CONTAINER_ID).unwrap_or_default(),
            netns: var(NETNS).map(PathBuf::from),
            ifname: var(IFNAME).unwrap_or_default(),
            args: var(ARGS).unwrap_or_default(),
            cni_path: var(PATH),
        };
        let required = command.required();
        if required.contains(&CONTAINER_ID) {
            validate_container_id(&inv.container_id)?;
        }
        if required.contains(&IFNAME) {
            validate_ifname(&inv.ifname)?;
        }
        if required.contains(&NETNS)
            && let Some(netns) = var(NETNS)
        {
            validate_netns(&netns)?;
        }
        // The commands about one attachment; STATUS, GC and VERSION ignore CNI_ARGS.
        if matches!(command, Command::Add | Command::Check | Command::Del) {
            validate_args(&inv.args)?;
        }
        Ok(inv)
    }
}

/// Spec: starts with an alphanumeric character, then alphanumerics, `_`, `.` or `-`.
pub fn validate_container_id(id: &str) -> Result<(), EnvError> {
    if is_cni_name(id) {
        Ok(())
    } else {
        Err(EnvError::Invalid {
            var: CONTAINER_ID,
            value: id.to_string(),
            reason: "must start with a letter or digit followed by letters, digits, '_', '.' or '-'",
        })
    }
}

/// Spec: the Linux rules — not empty, at most 15 bytes, not `.`/`..`, no `/`, `:` or
/// whitespace. Also no `%`: the kernel takes such a name for a template (`eth%d`) and
/// creates the link under another name.
pub fn validate_ifname(name: &str) -> Result<(), EnvError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 15 {
        Some("must be at most 15 bytes")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        Some("must not contain '/', ':', whitespace or NUL")
    } else if name.contains('%') {
        Some("must not contain '%' (the kernel would take it for a name template)")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(EnvError::Invalid {
            var: IFNAME,
            value: name.to_string(),
            reason,
        }),
    }
}

/// Spec: a path to the network namespace. A relative one would be resolved against
/// whatever directory the runtime started us in.
pub fn validate_netns(netns: &str) -> Result<(), EnvError> {
    let reason = if !netns.starts_with('/') {
        "must be an absolute path"
    } else if netns.contains('\0') {
        "must not contain NUL"
    } else {
        return Ok(());
    };
    Err(EnvError::Invalid {
        var: NETNS,
        value: netns.to_string(),
        reason,
    })
}

/// Spec: `KEY=VALUE` pairs separated by `;` (libcni's `LoadArgs` refuses anything
/// else). Empty pairs (`A=1;;B=2`, a trailing `;`) are tolerated.
pub fn validate_args(args: &str) -> Result<(), EnvError> {
    let bad = args
        .split(';')
        .filter(|pair| !pair.is_empty())
        .any(|pair| !matches!(pair.split_once('='), Some((key, _)) if !key.is_empty()));
    if bad {
        return Err(EnvError::Invalid {
            var: ARGS,
            value: args.to_string(),
            reason: "must be KEY=VALUE pairs separated by ';'",
        });
    }
    Ok(())
}

/// The spec's syntax for container ids and network names.
pub fn is_cni_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Invocation, EnvError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Invocation::from_vars(|k| map.get(k).cloned())
    }

    const ADD: [(&str, &str); 4] = [
        (COMMAND, "ADD"),
        (CONTAINER_ID, "c1"),
        (NETNS, "/run/netns/p1"),
        (IFNAME, "eth0"),
    ];

    #[test]
    fn a_complete_add_parses() {
        let inv = parse(&ADD).unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.netns, Some(PathBuf::from("/run/netns/p1")));
        assert_eq!(inv.cni_path, None);
    }

    #[test]
    fn missing_variables_are_all_named() {
        let err = parse(&[(COMMAND, "ADD")]).unwrap_err();
        assert_eq!(err, EnvError::Missing(vec![CONTAINER_ID, NETNS, IFNAME]));
        assert!(
            err.to_string()
                .contains("CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME")
        );
        assert_eq!(parse(&[]).unwrap_err(), EnvError::Missing(vec![COMMAND]));
    }

    #[test]
    fn del_needs_no_netns() {
        let inv = parse(&[
            (COMMAND, "DEL"),
            (CONTAINER_ID, "c1"),
            (IFNAME, "eth0"),
            (NETNS, ""),
        ])
        .unwrap();
        assert_eq!(inv.netns, None);
    }

    #[test]
    fn status_gc_and_version_need_nothing_else() {
        for cmd in ["STATUS", "GC", "VERSION"] {
            assert!(parse(&[(COMMAND, cmd)]).is_ok(), "{cmd}");
        }
    }

    #[test]
    fn unknown_commands_are_refused() {
        assert!(matches!(
            parse(&[(COMMAND, "add")]),
            Err(EnvError::UnknownCommand(_))
        ));
    }

    #[test]
    fn container_ids_follow_the_spec_syntax() {
        for bad in ["-abc", "a/b", "a b", "é"] {
            let mut vars = ADD.to_vec();
            vars[1] = (CONTAINER_ID, bad);
            let err = parse(&vars).unwrap_err();
            assert!(
                matches!(
                    err,
                    EnvError::Invalid {
                        var: CONTAINER_ID,
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert!(is_cni_name("a-b.c_1"));
    }

    #[test]
    fn interface_names_follow_the_linux_rules() {
        for bad in [".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            let mut vars = ADD.to_vec();
            vars[3] = (IFNAME, bad);
            let err = parse(&vars).unwrap_err();
            assert!(
                matches!(err, EnvError::Invalid { var: IFNAME, .. }),
                "{bad}: {err}"
            );
        }
        assert!(validate_ifname("fifteen-chars-x").is_ok());
    }
}
