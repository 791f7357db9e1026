//! Loading the embedded object. The agent loads it once: its programs find the pod from
//! the packet, so one verified instance of each serves every attachment, and the maps are
//! pinned by name so a restarted agent's instance shares them with the running datapath.

use aya::programs::SchedClassifier;

use super::{DatapathError, PinLayout, Result};

/// The BPF object built by `build.rs`, aligned as the ELF parser requires.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netkit-bpf"));

pub fn load(pins: &PinLayout) -> Result<aya::Ebpf> {
    Ok(aya::EbpfLoader::new()
        .default_map_pin_directory(pins.maps_dir())
        .load(OBJECT)?)
}

/// One classifier of `ebpf`, loaded (verified) on first use.
pub fn classifier<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })?;
    if program.fd().is_err() {
        program
            .load()
            .map_err(|source| DatapathError::Program { name, source })?;
    }
    Ok(program)
}
