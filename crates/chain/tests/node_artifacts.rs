//! Committed artifacts built by Node tools are fresh: the contract artifact
//! and the EIP-712 test vectors.

use std::process::Command;

/// Runs `node SCRIPT --check` from the repository root and fails with its
/// output unless it succeeds.
fn check_fresh(script: &str) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = Command::new("node")
        .args([script, "--check"])
        .current_dir(root)
        .output()
        .expect("node runs (install Node.js and run `npm ci`)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_contract_artifact_is_fresh() {
    check_fresh("contracts/build.mjs");
}

/// The committed EIP-712 vectors are what viem computes today, so the Rust
/// checks in `tollstream-protocol` compare against a live independent
/// implementation, not a stale file.
#[test]
fn the_eip712_vectors_are_what_viem_computes() {
    check_fresh("tests/js/make-vectors.mjs");
}
