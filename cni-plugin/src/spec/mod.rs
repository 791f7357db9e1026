//! The CNI protocol itself, independent of what this plugin does: invocation
//! environment, network configuration, result and error documents, spec versions.

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

#[cfg(test)]
mod bad_input_tests;
