//! The CNI spec versions this plugin speaks and which commands each one allows.

use std::fmt;

use crate::spec::env::Command;
use crate::spec::error::excerpt;

/// A CNI spec version this plugin can answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// What a configuration without `cniVersion` means (libcni's reading of the spec).
pub const IMPLIED_VERSION: &str = "0.1.0";

impl Version {
    pub const LATEST: Version = Version::V1_1_0;
    pub const SUPPORTED: [Version; 3] = [Version::V0_4_0, Version::V1_0_0, Version::V1_1_0];

    pub fn parse(s: &str) -> Option<Version> {
        Version::SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// `supportedVersions` of the VERSION answer.
    pub fn supported_strings() -> Vec<&'static str> {
        Version::SUPPORTED.iter().map(|v| v.as_str()).collect()
    }

    /// Results before 1.0.0 carry a `version` on each IP entry.
    pub fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// 1.1.0 added interface `mtu`/`socketPath`/`pciID` and the route attributes
    /// `mtu`/`advmss`/`priority`/`table`/`scope`.
    pub fn has_1_1_fields(self) -> bool {
        self >= Version::V1_1_0
    }

    /// The oldest version in which `command` exists.
    pub fn minimum_for(command: Command) -> Version {
        match command {
            Command::Status | Command::Gc => Version::V1_1_0,
            // CHECK came with 0.4.0, the oldest version we speak at all.
            Command::Add | Command::Del | Command::Check | Command::Version => Version::V0_4_0,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("CNI version {:?} is not supported (supported: {})", excerpt(requested), Version::supported_strings().join(", "))]
    Unsupported { requested: String },
    #[error("{command} needs CNI version {needs} or later; the configuration asks for {requested}")]
    CommandTooNew {
        command: Command,
        needs: Version,
        requested: Version,
    },
}

/// The version to answer in, from the configuration's `cniVersion` (absent = 0.1.0).
pub fn negotiate(requested: Option<&str>) -> Result<Version, VersionError> {
    let requested = requested.unwrap_or(IMPLIED_VERSION);
    Version::parse(requested).ok_or_else(|| VersionError::Unsupported {
        requested: requested.to_string(),
    })
}

/// Refuse commands the configuration's version does not define (STATUS and GC before 1.1.0).
pub fn require(command: Command, version: Version) -> Result<(), VersionError> {
    let needs = Version::minimum_for(command);
    if version < needs {
        return Err(VersionError::CommandTooNew {
            command,
            needs,
            requested: version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_versions_round_trip() {
        for v in Version::SUPPORTED {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::supported_strings(), ["0.4.0", "1.0.0", "1.1.0"]);
    }

    #[test]
    fn unknown_and_missing_versions_are_unsupported() {
        for bad in [Some("0.3.1"), Some("1.2.0"), Some("1.1"), Some(""), None] {
            let err = negotiate(bad).unwrap_err();
            assert!(
                matches!(err, VersionError::Unsupported { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(negotiate(None).unwrap_err().to_string().contains("0.1.0"));
        assert_eq!(negotiate(Some("1.0.0")).unwrap(), Version::V1_0_0);
    }

    #[test]
    fn status_and_gc_need_1_1_0() {
        for cmd in [Command::Status, Command::Gc] {
            assert!(require(cmd, Version::V1_0_0).is_err());
            assert!(require(cmd, Version::V0_4_0).is_err());
            assert!(require(cmd, Version::V1_1_0).is_ok());
        }
        for cmd in [Command::Add, Command::Del, Command::Check] {
            assert!(require(cmd, Version::V0_4_0).is_ok());
        }
    }

    #[test]
    fn versions_order_by_spec_age() {
        assert!(Version::V0_4_0 < Version::V1_0_0 && Version::V1_0_0 < Version::V1_1_0);
        assert!(Version::V0_4_0.ips_carry_version());
        assert!(!Version::V1_0_0.ips_carry_version());
        assert!(!Version::V1_0_0.has_1_1_fields());
    }
}
