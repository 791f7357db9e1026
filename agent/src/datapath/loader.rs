//! Loading the embedded object. Each attachment gets its own loaded instance because
//! the endpoint it serves is baked into `.rodata` (`ENDPOINT_IFINDEX`, `ENDPOINT_FLAGS`);
//! the maps are shared through their pins, so every instance sees the same state.

use aya::programs::SchedClassifier;
use netkit_common::global_names;

use super::{DatapathError, PinLayout, Result};

/// The BPF object built by `build.rs`, aligned as the ELF parser requires.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netkit-bpf"));

pub fn load(pins: &PinLayout, endpoint_ifindex: u32, flags: u32) -> Result<aya::Ebpf> {
    Ok(aya::EbpfLoader::new()
        .default_map_pin_directory(pins.maps_dir())
        .override_global(global_names::ENDPOINT_IFINDEX, &endpoint_ifindex, true)
        .override_global(global_names::ENDPOINT_FLAGS, &flags, true)
        .load(OBJECT)?)
}

/// Load (verify) one classifier of `ebpf` and return it.
pub fn classifier<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })?;
    program
        .load()
        .map_err(|source| DatapathError::Program { name, source })?;
    Ok(program)
}
