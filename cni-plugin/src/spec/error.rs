//! The error document and the error codes: the spec's well-known codes and this
//! plugin's own (100+, which the spec leaves to plugins).

use std::borrow::Cow;

use serde::Serialize;

/// How much of an offending value an error message quotes.
pub const EXCERPT_MAX: usize = 64;

/// `s`, cut to at most [`EXCERPT_MAX`] bytes (on a character boundary, marked `…`) so
/// that an oversized value does not make an oversized error document.
pub fn excerpt(s: &str) -> Cow<'_, str> {
    if s.len() <= EXCERPT_MAX {
        return Cow::Borrowed(s);
    }
    let end = (0..=EXCERPT_MAX)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len()))
}

/// Error codes. 1–99 are the spec's and used only with the spec's meaning.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: cannot service ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available and existing pods may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;

    /// The interface to create already exists (in the pod or, for the host-side
    /// name, on the host).
    pub const INTERFACE_EXISTS: u32 = 100;
    /// A kernel (netlink, sysctl) operation failed.
    pub const KERNEL: u32 = 101;
    /// The agent refused or failed a request for a reason that is not transient.
    pub const AGENT: u32 = 102;
    /// CHECK found the attachment different from its `prevResult`.
    pub const CHECK_FAILED: u32 = 103;
}

/// The error document printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        let details = details.into();
        self.details = (!details.is_empty()).then_some(details);
        self
    }

    /// `{cniVersion, code, msg, details}`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Doc<'a> {
            cni_version: &'a str,
            #[serde(flatten)]
            error: &'a CniError,
        }
        serde_json::to_value(Doc {
            cni_version,
            error: self,
        })
        .unwrap_or(serde_json::Value::Null)
    }

    /// Read an error document another plugin printed (delegated IPAM).
    pub fn from_plugin_output(stdout: &[u8]) -> Option<CniError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            code: u32,
            #[serde(default)]
            msg: String,
            #[serde(default)]
            details: Option<String>,
        }
        let doc: Doc = serde_json::from_slice(stdout).ok()?;
        Some(CniError {
            code: doc.code,
            msg: doc.msg,
            details: doc.details.filter(|d| !d.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_document_has_the_spec_shape() {
        let doc = CniError::new(7, "invalid network configuration")
            .with_details("mtu: too big")
            .to_json("1.1.0");
        assert_eq!(
            doc,
            serde_json::json!({
                "cniVersion": "1.1.0", "code": 7, "msg": "invalid network configuration", "details": "mtu: too big"
            })
        );
        let doc = CniError::new(11, "agent down")
            .with_details("")
            .to_json("0.4.0");
        assert!(doc.get("details").is_none());
        assert_eq!(doc["cniVersion"], "0.4.0");
    }

    #[test]
    fn excerpts_cut_long_values_on_a_character_boundary() {
        assert_eq!(excerpt("eth0"), "eth0");
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert!(
            cut.starts_with(&"é".repeat(32)) && cut.ends_with("… (200 bytes)"),
            "{cut}"
        );
    }

    #[test]
    fn plugin_errors_are_read_back() {
        let e =
            CniError::from_plugin_output(br#"{"code": 3, "msg": "missing containerID"}"#).unwrap();
        assert_eq!(e, CniError::new(3, "missing containerID"));
        assert!(CniError::from_plugin_output(b"garbage").is_none());
    }
}
