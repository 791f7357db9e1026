//! Host-side library target: empty. It exists so the agent can name this crate as a
//! build-dependency (cargo then rebuilds the agent when it changes); the programs are
//! the `netkit-bpf` binary, built for `bpfel-unknown-none` by the agent's build script.
#![no_std]
