//! The file name of an endpoint: its pin directory under the bpffs root and its record in
//! the state directory. Distinct endpoint ids always get distinct names, and every name is
//! one safe path component within `NAME_MAX`.
//!
//! A name is `<container id>:<ifname>` with each part escaped: bytes other than
//! `[A-Za-z0-9._-]` become `%XX`. `:` and `%` are always escaped inside a part, so the
//! encoding can be undone and two ids never meet. (Agents before it joined the raw parts
//! with `_`, so `a_b`+`c` and `a`+`b_c` shared one directory; see [`adopt_legacy_pins`].)

use std::collections::HashMap;
use std::path::Path;

use netkit_api::EndpointId;
use sha2::{Digest as _, Sha256};

/// Longest file name bpffs (and every Linux file system we keep state on) accepts.
const NAME_MAX: usize = 255;
const SEPARATOR: char = ':';
/// Starts a hashed name; escaped in readable names, so the two forms never meet.
const HASHED: char = '#';

/// The endpoint's name.
///
/// The agent accepts container ids of up to 200 bytes of `[A-Za-z0-9_.-]` and ifnames of
/// up to 15 bytes, whose readable names (at most 200 + 1 + 3 × 15 bytes) fit. The CNI
/// spec itself bounds neither length, so a longer id gets `#` and the SHA-256 of its
/// readable name instead: still distinct, but no longer readable back — which is fine,
/// since the id itself is kept in the registry (and its record, under this same name).
pub fn of(id: &EndpointId) -> String {
    let readable = format!(
        "{}{SEPARATOR}{}",
        escape(&id.container_id),
        escape(&id.ifname)
    );
    if readable.len() <= NAME_MAX {
        return readable;
    }
    let digest = Sha256::digest(readable.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HASHED}{hex}")
}

/// The name agents before this encoding gave the endpoint.
pub fn legacy(id: &EndpointId) -> String {
    format!("{}_{}", id.container_id, id.ifname)
}

fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Move the pin directories an older agent made (`<container id>_<ifname>`) to the
/// endpoints' current names, before reconciliation looks at them.
///
/// Renaming keeps the pinned link — attached all along — so the endpoint is adopted as
/// it was: no second attach, no moment without a program. A legacy name that two
/// registered endpoints share (the collision this encoding removes) cannot be given to
/// either: reconciliation attaches both under their own names and then removes it as an
/// orphan.
pub fn adopt_legacy_pins<'a>(
    endpoints_dir: &Path,
    registered: impl IntoIterator<Item = &'a EndpointId>,
) {
    let mut claims: HashMap<String, Vec<&EndpointId>> = HashMap::new();
    for id in registered {
        claims.entry(legacy(id)).or_default().push(id);
    }
    for (old, ids) in claims {
        let from = endpoints_dir.join(&old);
        if !from.is_dir() {
            continue;
        }
        let [id] = ids.as_slice() else {
            tracing::warn!(pin = %old, claimed_by = ids.len(), "legacy pin directory shared by several endpoints; re-attaching each under its own name");
            continue;
        };
        let to = endpoints_dir.join(of(id));
        if to.exists() {
            // Both exist after a crash mid-adoption: the current one wins, and
            // reconciliation removes the legacy one as an orphan.
            continue;
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => tracing::info!(endpoint = %id, from = %old, "adopted legacy pin directory"),
            Err(e) => {
                tracing::warn!(endpoint = %id, pin = %old, error = %e, "cannot rename legacy pin directory; re-attaching instead")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: &str, i: &str) -> EndpointId {
        EndpointId::new(c, i)
    }

    /// The inverse of a readable name: its existence proves the encoding injective.
    fn decode(name: &str) -> Option<EndpointId> {
        let (c, i) = name.split_once(SEPARATOR)?;
        Some(EndpointId::new(unescape(c)?, unescape(i)?))
    }

    fn unescape(part: &str) -> Option<String> {
        let bytes = part.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'%' {
                let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                at += 3;
            } else {
                out.push(bytes[at]);
                at += 1;
            }
        }
        String::from_utf8(out).ok()
    }

    fn tricky_ids() -> Vec<EndpointId> {
        vec![
            id("a_b", "c"),
            id("a", "b_c"),
            id("a:b", "c"),
            id("a", "b:c"),
            id("a%3Ab", "c"),
            id("abc", "eth0"),
            id("abc", "eth0\u{0}"),
            id("abc", "é\n/."),
            id(".", ".."),
            id("", ""),
            id(&"f".repeat(64), "eth0"),
            id(&"_".repeat(200), &"%".repeat(15)),
        ]
    }

    #[test]
    fn the_old_collision_pair_gets_two_names() {
        let (one, two) = (id("a_b", "c"), id("a", "b_c"));
        assert_eq!(legacy(&one), legacy(&two), "the pair collided before");
        assert_ne!(of(&one), of(&two));
        assert_eq!(of(&one), "a_b:c");
        assert_eq!(of(&two), "a:b_c");
    }

    #[test]
    fn readable_names_decode_back_to_their_id() {
        for id in tricky_ids() {
            let name = of(&id);
            assert_eq!(decode(&name).as_ref(), Some(&id), "{name:?}");
        }
    }

    #[test]
    fn names_are_one_safe_path_component_within_name_max() {
        let mut ids = tricky_ids();
        ids.push(id(&"x".repeat(4096), "eth0"));
        for id in ids {
            let name = of(&id);
            assert!(name.len() <= NAME_MAX, "{} bytes", name.len());
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-:%#".contains(&b)),
                "{name:?}"
            );
            assert!(name != "." && name != "..");
            assert!(!legacy_could_be(&name), "{name:?} could be a legacy name");
        }
    }

    /// Legacy names never contain `:` (container ids and ifnames cannot) nor start with
    /// `#` (container ids cannot), so an old directory is never mistaken for a new one.
    fn legacy_could_be(name: &str) -> bool {
        !name.contains(SEPARATOR) && !name.starts_with(HASHED)
    }

    #[test]
    fn ids_too_long_to_read_back_are_hashed_and_still_distinct() {
        let long = "x".repeat(300);
        let one = of(&id(&long, "eth0"));
        let two = of(&id(&long, "eth1"));
        let three = of(&id(&format!("{long}_eth"), "1"));
        assert!(one.starts_with(HASHED) && one.len() == 65, "{one}");
        assert_ne!(one, two);
        assert_ne!(two, three);
        assert_eq!(one, of(&id(&long, "eth0")), "the name must be stable");
    }

    #[test]
    fn the_longest_accepted_id_stays_readable() {
        // The agent's limits: 200-byte container ids, 15-byte ifnames (worst case: every
        // ifname byte escaped).
        let name = of(&id(&"a".repeat(200), &"%".repeat(15)));
        assert!(!name.starts_with(HASHED), "{name}");
    }

    #[test]
    fn legacy_directories_are_renamed_unless_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let single = id("solo", "eth0");
        let (one, two) = (id("a_b", "c"), id("a", "b_c"));
        for name in [legacy(&single), legacy(&one)] {
            std::fs::create_dir_all(dir.join(name).join("egress")).unwrap();
        }
        adopt_legacy_pins(dir, [&single, &one, &two]);
        assert!(dir.join(of(&single)).join("egress").exists());
        assert!(!dir.join(legacy(&single)).exists());
        // Shared: left for reconciliation.
        assert!(dir.join(legacy(&one)).exists());
        assert!(!dir.join(of(&one)).exists() && !dir.join(of(&two)).exists());
    }
}
