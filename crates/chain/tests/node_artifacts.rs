//! Committed artifacts built by Node tools are fresh: the contract artifact
//! and the EIP-712 test vectors.

use std::process::Command;

#[test]
fn the_contract_artifact_is_fresh() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = Command::new("node")
        .args(["contracts/build.mjs", "--check"])
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

/// The committed EIP-712 vectors are what viem computes today, so the Rust
/// checks in `tollstream-protocol` compare against a live independent
/// implementation, not a stale file.
#[test]
fn the_eip712_vectors_are_what_viem_computes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = Command::new("node")
        .args(["tests/js/make-vectors.mjs", "--check"])
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
