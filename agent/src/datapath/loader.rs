//! Loading the embedded object. The agent loads it once: its programs find the pod from
//! the packet, so one verified instance of each serves every attachment, and the maps are
//! pinned by name so a restarted agent's instance shares them with the running datapath.
//!
//! The programs that ask conntrack whether the stack translated a flow call kfuncs, which
//! aya 0.14 cannot load: their calls are bound here (`kfunc.rs`) and the programs loaded
//! with our own `BPF_PROG_LOAD` (which passes module BTF in `fd_array`) from the
//! instructions aya-obj relocates against the pinned maps. Where that fails — no
//! conntrack in the kernel, a kernel whose kfuncs differ — their `_noct` twins are loaded
//! instead, and the datapath says why.

use std::collections::HashSet;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use aya::programs::SchedClassifier;
use netkit_common::program_names;

use super::kfunc::{self, Bindings};
use super::{DatapathError, PinLayout, Result, sys};

/// The BPF object built by `build.rs`, aligned as the ELF parser requires.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netkit-bpf"));

/// The kfuncs the conntrack-aware programs call.
pub const KFUNCS: &[&str] = &["bpf_skb_ct_lookup", "bpf_ct_release"];

#[cfg(test)]
pub fn object() -> &'static [u8] {
    OBJECT
}

/// What the operator asked for (`--translation-check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TranslationMode {
    Conntrack,
    StackOnly,
}

/// How this node's datapath tells flows the host stack translated from the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslationCheck {
    /// Asked of conntrack per packet: untranslated flows keep the fast path both ways.
    Conntrack,
    /// Conntrack cannot be asked (the reason says why): every pod-bound TCP/UDP packet
    /// goes through the host stack, which is always correct.
    StackOnly(String),
}

impl std::fmt::Display for TranslationCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TranslationCheck::Conntrack => f.write_str("conntrack"),
            TranslationCheck::StackOnly(why) => write!(f, "stack-only ({why})"),
        }
    }
}

/// The loaded programs, one fd per role.
pub struct Programs {
    pub pod_egress: OwnedFd,
    pub uplink_ingress: OwnedFd,
    pub translation_check: TranslationCheck,
}

/// The object with its kfunc calls bound, in a buffer aligned for the ELF parser (which
/// refuses misaligned headers).
struct BoundObject {
    words: Vec<u64>,
    len: usize,
}

impl BoundObject {
    fn bytes(&self) -> &[u8] {
        // SAFETY: any initialised u64 storage is valid as bytes; `len` ≤ its byte length.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

fn bind_object(bindings: &Bindings) -> Result<BoundObject> {
    let kfunc_err = |e: kfunc::KfuncError| DatapathError::Kfunc(e.to_string());
    let sites = kfunc::call_sites(OBJECT, KFUNCS).map_err(kfunc_err)?;
    let mut bytes = OBJECT.to_vec();
    kfunc::patch(&mut bytes, &sites, bindings).map_err(kfunc_err)?;
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_ne_bytes(b);
    }
    Ok(BoundObject {
        words,
        len: bytes.len(),
    })
}

/// Load the object: maps (pinned, or adopted from the pins), and the programs.
pub fn load(pins: &PinLayout, mode: TranslationMode) -> Result<(aya::Ebpf, Programs)> {
    let bindings = match mode {
        TranslationMode::Conntrack => kfunc::bind(KFUNCS),
        TranslationMode::StackOnly => Err(kfunc::KfuncError::Disabled),
    };
    let object = bind_object(bindings.as_ref().unwrap_or(&Bindings::default()))?;
    let mut ebpf = aya::EbpfLoader::new()
        .default_map_pin_directory(pins.maps_dir())
        .load(object.bytes())?;
    let conntrack = bindings.map_err(|e| e.to_string()).and_then(|bindings| {
        Ok((
            load_with_kfuncs(&object, pins, program_names::POD_EGRESS, &bindings)?,
            load_with_kfuncs(&object, pins, program_names::UPLINK_INGRESS, &bindings)?,
        ))
    });
    let (pod_egress, uplink_ingress, translation_check) = match conntrack {
        Ok((egress, uplink)) => (egress, uplink, TranslationCheck::Conntrack),
        Err(why) => (
            classifier_fd(&mut ebpf, program_names::POD_EGRESS_NOCT)?,
            classifier_fd(&mut ebpf, program_names::UPLINK_INGRESS_NOCT)?,
            TranslationCheck::StackOnly(why),
        ),
    };
    Ok((
        ebpf,
        Programs {
            pod_egress,
            uplink_ingress,
            translation_check,
        },
    ))
}

/// Load program `name` ourselves: aya-obj relocates it against the pinned maps, and the
/// load passes the module BTF fds its kfunc calls refer to.
fn load_with_kfuncs(
    object: &BoundObject,
    pins: &PinLayout,
    name: &str,
    bindings: &Bindings,
) -> std::result::Result<OwnedFd, String> {
    let mut obj = aya_obj::Object::parse(object.bytes()).map_err(|e| format!("parsing: {e}"))?;
    let maps: Vec<(String, aya_obj::Map)> = obj
        .maps
        .iter()
        .map(|(n, m)| (n.clone(), m.clone()))
        .collect();
    let fds = maps
        .iter()
        .map(|(map, _)| sys::obj_get(&pins.maps_dir().join(map)))
        .collect::<std::result::Result<Vec<OwnedFd>, _>>()
        .map_err(|e| format!("opening the pinned maps: {e}"))?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(
        maps.iter()
            .zip(&fds)
            .map(|((map, def), fd)| (map.as_str(), fd.as_fd().as_raw_fd(), def)),
        &text_sections,
    )
    .map_err(|e| format!("relocating maps: {e}"))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| format!("relocating calls: {e}"))?;
    let function = obj
        .programs
        .get(name)
        .and_then(|p| obj.functions.get(&p.function_key()))
        .ok_or_else(|| format!("no program {name}"))?;
    let insns: Vec<u64> = function.instructions.iter().map(encode).collect();
    sys::prog_load_sched_cls(name, &insns, &bindings.fd_array()).map_err(|(e, log)| {
        // The verifier's last lines say what it refused.
        let tail: Vec<&str> = log.lines().rev().take(4).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{name}: {e}: {}", tail.join(" / "))
    })
}

/// `struct bpf_insn` as the kernel reads it: code, dst|src<<4, off, imm (little-endian).
fn encode(insn: &aya_obj::generated::bpf_insn) -> u64 {
    let mut b = [0u8; 8];
    b[0] = insn.code;
    b[1] = (insn.dst_reg() & 0x0f) | (insn.src_reg() << 4);
    b[2..4].copy_from_slice(&insn.off.to_le_bytes());
    b[4..8].copy_from_slice(&insn.imm.to_le_bytes());
    u64::from_le_bytes(b)
}

/// One classifier of `ebpf`, loaded (verified), as an fd of its own.
fn classifier_fd(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<OwnedFd> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })?;
    program
        .load()
        .map_err(|source| DatapathError::Program { name, source })?;
    let fd = program
        .fd()
        .map_err(|source| DatapathError::Program { name, source })?;
    fd.as_fd()
        .try_clone_to_owned()
        .map_err(|source| DatapathError::Io {
            what: "duplicating the fd of program",
            path: name.into(),
            source,
        })
}
